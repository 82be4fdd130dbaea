"""The Dockerfile and .dockerignore, checked without building: hadolint, and what the image must be."""
from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys

import pytest

from tests.container import image

HADOLINT = pathlib.Path(sys.executable).with_name("hadolint")
PINNED_BASE = re.compile(r"^python:3\.\d+\.\d+-slim-\w+$")


def test_hadolint_finds_nothing_at_any_severity():
    run = subprocess.run([str(HADOLINT), "--format", "json", "--failure-threshold", "style", str(image.DOCKERFILE)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert json.loads(run.stdout or "[]") == [] and run.returncode == 0, run.stdout + run.stderr


def test_hadolint_would_catch_a_mistake(tmp_path):
    # the linter really runs: an unpinned apt-get install and a root image are reported
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\nUSER root\n")
    run = subprocess.run([str(HADOLINT), "--format", "json", str(bad)], capture_output=True, text=True,
                         timeout=60, check=False)
    codes = {finding["code"] for finding in json.loads(run.stdout)}
    assert run.returncode != 0 and {"DL3007", "DL3008", "DL3002"} <= codes


@pytest.mark.parametrize("stage", image.stages(), ids=lambda stage: stage.name)
def test_every_stage_starts_from_a_pinned_slim_python(stage):
    assert PINNED_BASE.match(stage.base), stage.base


@pytest.mark.parametrize("stage", [s for s in image.stages() if s.name != "deps"], ids=lambda stage: stage.name)
def test_images_run_as_a_non_root_user_that_exists(stage):
    uid = stage.last("USER").split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000  # numeric: Kubernetes' runAsNonRoot can verify it
    assert any(f"--uid {uid}" in value for value in stage.values("RUN")), "the user is created in the image"
    names = [name for name, _ in stage.instructions]
    assert "RUN" not in names[names.index("USER"):], "nothing runs as root after USER"


def test_the_default_command_is_the_supervisor_in_exec_form_and_health_is_checked_on_health():
    assert image.cmd() == ["python", "scripts/serve_all.py"]
    options, command = image.healthcheck()
    assert command == ["python", "scripts/healthcheck.py"]
    assert {"interval", "timeout", "start-period", "retries"} <= options.keys()
    env = image.image_env()
    assert env["HOST"] == "0.0.0.0" and env["PORT"] == "8000"  # reachable from outside the container
    assert image.runtime_stage().last("EXPOSE") == env["PORT"]
    assert image.runtime_stage().last("STOPSIGNAL") == "SIGTERM"


def test_dependencies_come_from_the_pinned_requirement_files():
    deps = next(stage for stage in image.stages() if stage.name == "deps")
    installs = [value for value in deps.values("RUN") if "pip install" in value]
    assert installs and all("-r /tmp/requirements/requirements-server.txt" in value for value in installs)
    copied = {source for sources, _ in image.copied_sources(deps) for source in sources}
    pending, seen = ["requirements-server.txt"], set()
    while pending:  # the file and every file it includes with -r: each copied, each line pinned
        name = pending.pop()
        seen.add(name)
        assert name in copied, f"{name} is installed but not copied into the deps stage"
        for line in (image.ROOT / name).read_text().splitlines():
            requirement = line.split("#")[0].strip()
            if requirement.startswith("-r"):
                included = requirement[2:].strip()
                if included not in seen:
                    pending.append(included)
            elif requirement:
                assert "==" in requirement, f"{name}: {requirement} is not pinned"
    assert "requirements.txt" in seen  # the runtime dependencies are among them


def test_the_build_context_holds_what_the_image_copies_and_nothing_private():
    for stage in image.stages():
        for sources, _ in image.copied_sources(stage):
            for source in sources:
                path = image.ROOT / source
                files = [p for p in path.rglob("*.py")] if path.is_dir() else [path]
                assert files, source
                for file in files:
                    relative = file.relative_to(image.ROOT).as_posix()
                    if "__pycache__" not in relative:
                        assert not image.excluded(relative), f"{relative} is copied but .dockerignore drops it"
    for private in ("data/jobs.db", "data/dev-token", ".venv/bin/python", ".git/config", ".chalice/config.json",
                    "tests/unit/test_routes.py", "bench/core.py", "chalicelib/__pycache__/app.cpython-311.pyc"):
        assert image.excluded(private), private


def test_the_staged_app_is_the_runtime_layout(tmp_path):
    app = image.stage_app(tmp_path)
    for expected in ("app.py", "wsgi.py", "chalicelib/api/metrics.py", "worker_fn/__main__.py",
                     "scripts/serve_all.py", "scripts/healthcheck.py"):
        assert (app / expected).is_file(), expected
    assert not (app / "tests").exists() and not list(app.rglob("__pycache__"))
