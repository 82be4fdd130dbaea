"""What the Dockerfile, .dockerignore and docker-compose.yml say, read from the files themselves, so
that the tests run exactly the commands, environment and file layout the image would have.

There is no Docker engine on the test machines: `stage_app` lays out the runtime stage's files as
its COPY instructions would (minus what .dockerignore leaves out), and `image_env` is its ENV with
the image's virtualenv replaced by this checkout's.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import shlex
import shutil
import sys

import yaml
from dockerfile_parse import DockerfileParser

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE_FILE = ROOT / "docker-compose.yml"
IMAGE_VENV_BIN = "/opt/venv/bin"


@dataclasses.dataclass(frozen=True)
class Stage:
    """One build stage: its name and its instructions in order, as (INSTRUCTION, value)."""

    name: str
    base: str
    instructions: list[tuple[str, str]]

    def values(self, instruction: str) -> list[str]:
        return [value for name, value in self.instructions if name == instruction]

    def last(self, instruction: str) -> str:
        return self.values(instruction)[-1]


def stages() -> list[Stage]:
    """The Dockerfile's stages; the last one is what `docker build` makes by default."""
    found: list[Stage] = []
    for item in DockerfileParser(str(DOCKERFILE)).structure:
        instruction, value = item["instruction"], item["value"]
        if instruction == "FROM":
            base, _, name = value.partition(" AS ")
            found.append(Stage(name=name.strip(), base=base.strip(), instructions=[]))
        elif instruction != "COMMENT":
            found[-1].instructions.append((instruction, value))
    return found


def runtime_stage() -> Stage:
    return stages()[-1]


def exec_form(value: str) -> list[str]:
    """A CMD written as a JSON array (exec form: no shell between Docker and the process)."""
    command = json.loads(value)
    assert isinstance(command, list) and all(isinstance(part, str) for part in command), value
    return command


def cmd() -> list[str]:
    return exec_form(runtime_stage().last("CMD"))


def healthcheck() -> tuple[dict[str, str], list[str]]:
    """The runtime stage's HEALTHCHECK: its options and its exec-form command."""
    options, _, command = runtime_stage().last("HEALTHCHECK").partition("CMD ")
    flags = dict(flag.lstrip("-").split("=", 1) for flag in options.split())
    return flags, exec_form(command)


def image_env(**overrides: str) -> dict[str, str]:
    """The runtime stage's ENV, on this machine: its virtualenv's bin is this checkout's."""
    env = {}
    for value in runtime_stage().values("ENV"):
        for pair in shlex.split(value):
            key, _, item = pair.partition("=")
            env[key] = item
    venv_bin = str(pathlib.Path(sys.executable).parent)
    env["PATH"] = env["PATH"].replace(IMAGE_VENV_BIN, venv_bin).replace("$PATH", os.environ.get("PATH", ""))
    # HOME and the like: what a container's process has too; nothing of the caller's settings.
    env.update({key: os.environ[key] for key in ("HOME", "LANG", "TMPDIR") if key in os.environ})
    env.update(overrides)
    return env


def copied_sources(stage: Stage) -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY from the build context (not `--from=` another stage)."""
    copies = []
    for value in stage.values("COPY"):
        parts = value.split()
        if any(part.startswith("--from=") for part in parts):
            continue
        parts = [part for part in parts if not part.startswith("--")]
        copies.append((parts[:-1], parts[-1]))
    return copies


def stage_app(target: pathlib.Path) -> pathlib.Path:
    """The runtime stage's WORKDIR as its COPY instructions fill it, in `target`."""
    stage = runtime_stage()
    for sources, destination in copied_sources(stage):
        into = target / destination
        for source in sources:
            path = ROOT / source
            if path.is_dir():
                shutil.copytree(path, into, dirs_exist_ok=True,
                                ignore=lambda folder, names: [n for n in names if excluded(
                                    (pathlib.Path(folder) / n).relative_to(ROOT).as_posix())])
            elif destination.endswith("/"):
                into.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, into / path.name)
            else:
                shutil.copy2(path, into)
    return target


def ignore_patterns() -> list[tuple[bool, re.Pattern]]:
    """.dockerignore as (is_exception, regex), in order."""
    patterns = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        glob = line.lstrip("!").strip("/")
        regex = re.escape(glob).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        patterns.append((exception, re.compile(regex.replace(r"\?", "[^/]"))))
    return patterns


def excluded(path: str) -> bool:
    """Whether Docker leaves `path` (relative to the context) out: the last pattern that matches
    the path or one of its parent folders decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    verdict = False
    for exception, pattern in ignore_patterns():
        if any(pattern.fullmatch(prefix) for prefix in prefixes):
            verdict = not exception
    return verdict


def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def compose_env(service: str, **values: str) -> dict[str, str]:
    """A service's environment with `${NAME:-default}` / `${NAME:?error}` resolved from `values`."""
    def resolve(match: re.Match) -> str:
        name, operator, default = match.group(1), match.group(2) or "", match.group(3) or ""
        if name in values:
            return values[name]
        assert operator != ":?", f"{service}: {name} is required ({default})"
        return default

    environment = compose()["services"][service].get("environment") or {}
    return {key: re.sub(r"\$\{(\w+)(:-|:\?)?([^}]*)\}", resolve, str(value)) for key, value in environment.items()}
