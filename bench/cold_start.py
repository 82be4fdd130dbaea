"""What a Lambda cold start costs this app, measured on this machine (a proxy: Lambda's CPU share at
512 MB is smaller than one core here).

    .venv/bin/python bench/cold_start.py [--runs 15] [--package DIR]

1. Import time of app.py in a fresh interpreter: `python -c "import app"` against `python -c pass`
   and against the floor any Chalice + pydantic app pays (FLOOR), interleaved run by run, `--runs`
   times each (after a warm-up run, so the OS file cache is warm as on a reused host); the goal is
   `import app` ≤ 1.5 × the floor.
2. The same from the deployment package as Lambda runs it: unpacked, read-only, no site-packages,
   nothing written; with the bytecode `make package` adds, and without it (as Chalice ships it),
   against the floor run from the same package.
3. The first request after it: building the context (store, queue, image store) on SQLite, with
   QUEUE_BACKEND=local and with the SQS/S3 adapters (no network: building them makes no request);
   and a whole first submit in a fresh process (import to 202).
4. What dominates the import: `python -X importtime`, self time summed per top-level package.
5. The deployment package: `make package` (or the given directory's deployment.zip), zipped and
   unzipped size, per top-level entry.

Writes bench/results/cold_start.json and prints Markdown tables.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
# The floor any Chalice + pydantic app pays: chalice imported, one model defined and used once
# (pydantic imports lazily, so `import pydantic` alone would be no floor).
FLOOR = """
import chalice, pydantic
class Prompt(pydantic.BaseModel):
    prompt: str
Prompt.model_validate({"prompt": "a cat"})
app = chalice.Chalice(app_name="floor")
"""
# The first submit in a fresh process, through Chalice's test client: import, context, validation,
# the first store connection and migration, the insert; printed in ms.
FIRST_SUBMIT = """
import time
started = time.perf_counter()
import json, app
from chalice.test import Client
with Client(app.app) as client:
    response = client.http.post("/sdapi/v1/txt2img", body=json.dumps({"prompt": "a cat", "steps": 20}),
                                headers={"Authorization": "Bearer bench", "Content-Type": "application/json"})
assert response.status_code == 202, response.body
print((time.perf_counter() - started) * 1000)
"""
FIRST_USE = """
import time, app
from chalicelib import context
started = time.perf_counter()
context.get_context()
print(time.perf_counter() - started)
"""


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "CONFIG_", "QUEUE_", "IMAGE_", "DATABASE_", "JOBS_", "WEBHOOKS_",
                                "SUBMISSIONS_"))}
    env.update(extra)
    return env


def wall(code: str, *, runs: int, env: dict) -> list[float]:
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True)  # warm-up
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True)
        times.append(time.perf_counter() - started)
    return times


def run_once(code: str, *, env: dict) -> tuple[float, float]:
    """(wall, CPU) seconds of one fresh interpreter running `code`; CPU (user + system, from wait4)
    is what a busy shared machine disturbs least."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, code)
    return time.perf_counter() - started, usage.ru_utime + usage.ru_stime


def measure_source(*, runs: int, env: dict, pycache: str) -> None:
    """Part 1 alone, wall and CPU: `import app` with our sources compiled at every start (as under
    PYTHONDONTWRITEBYTECODE=1, set in this machine's environment and the container) and with their
    bytecode cached (as a reused host or the package has it; the floor's libraries always have theirs)."""
    cached = {key: value for key, value in env.items() if key != "PYTHONDONTWRITEBYTECODE"}
    cached["PYTHONPYCACHEPREFIX"] = pycache
    variants = {"`python -c pass`": ("pass", env), "floor": (FLOOR, env),
                "`import app`, sources compiled at start": ("import app", env),
                "`import app`, bytecode cached": ("import app", cached)}
    measured: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for round_ in range(runs + 1):  # interleaved; the first round is a warm-up (and writes the bytecode)
        for name, (code, variant_env) in variants.items():
            timing = run_once(code, env=variant_env)
            if round_:
                measured[name].append(timing)
    floor = measured["floor"]
    print(f"| measure ({runs} runs, interleaved) | wall ms: median (min–max) | CPU ms: median (min–max) | "
          "÷ floor, CPU: median (per-run min–max) |\n|---|---|---|---|")
    for name, timings in measured.items():
        ratios = sorted(cpu / floor_cpu for (_, cpu), (_, floor_cpu) in zip(timings, floor, strict=True))
        ratio = statistics.median(cpu for _, cpu in timings) / statistics.median(cpu for _, cpu in floor)
        print(f"| {name} | {spread([w for w, _ in timings])} | {spread([c for _, c in timings])} | "
              f"{ratio:.2f} ({ratios[0]:.2f}–{ratios[-1]:.2f}) |")


def from_package(archive: pathlib.Path, *, runs: int) -> dict[str, list[float]]:
    """From the unpacked package only (Lambda: /var/task, read-only, no site-packages), interleaved
    run by run: `import app` with the package's bytecode, the same with an empty pycache prefix
    hiding it (sources only, as Chalice ships them), and FLOOR on the package's chalice and pydantic."""
    with tempfile.TemporaryDirectory() as task:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(task)
        app_code = f"import sys; sys.path.insert(0, {task!r}); import app"
        floor_code = f"import sys; sys.path.insert(0, {task!r})\n{FLOOR}"
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        variants = {"with_bytecode": (["-S", "-B"], app_code), "floor": (["-S", "-B"], floor_code),
                    "source_only": (None, app_code)}
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(runs + 1):  # the first round is a warm-up
            for name, (flags, code) in variants.items():
                flags = flags or ["-S", "-B", "-X", f"pycache_prefix={tempfile.mkdtemp()}"]
                started = time.perf_counter()
                subprocess.run([sys.executable, *flags, "-c", code], cwd=task, env=env, check=True)
                times[name].append(time.perf_counter() - started)
        return {name: values[1:] for name, values in times.items()}


def first_submit(*, runs: int, env: dict) -> list[float]:
    """ms from a fresh interpreter's first line to its first submit's 202 (the interpreter's own
    start not included)."""
    return [float(subprocess.run([sys.executable, "-c", FIRST_SUBMIT], cwd=ROOT, env=env, check=True,
                                 capture_output=True, text=True).stdout) for _ in range(runs)]


def spread(values: list[float]) -> str:
    """median (min–max) in ms."""
    ms = sorted(value * 1000 for value in values)
    return f"{statistics.median(ms):.0f} ({ms[0]:.0f}–{ms[-1]:.0f})"


def first_use(*, runs: int, env: dict) -> list[float]:
    return [float(subprocess.run([sys.executable, "-c", FIRST_USE], cwd=ROOT, env=env, check=True,
                                 capture_output=True, text=True).stdout) for _ in range(runs)]


def import_breakdown(env: dict) -> list[tuple[str, float]]:
    """Self import time (ms) per top-level package, largest first."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", "import app"], cwd=ROOT, env=env,
                            check=True, capture_output=True, text=True)
    totals: collections.Counter[str] = collections.Counter()
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _cumulative, name = (part.strip() for part in line[len("import time:"):].split("|"))
        totals[name.split(".")[0]] += int(self_us) / 1000
    return totals.most_common()


def package_sizes(directory: pathlib.Path | None) -> dict:
    if directory is None:
        directory = pathlib.Path(tempfile.mkdtemp(prefix="package-"))
        subprocess.run(["make", "-s", "-o", "setup", "package", f"PACKAGE_DIR={directory}"], cwd=ROOT, check=True,
                       env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")})
    archive = directory / "deployment.zip"
    zipped: collections.Counter[str] = collections.Counter()
    unzipped: collections.Counter[str] = collections.Counter()
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            top = info.filename.split("/")[0]
            top = top.split("-")[0] if top.endswith((".dist-info", ".libs")) else top
            zipped[top] += info.compress_size
            unzipped[top] += info.file_size
    return {"archive": str(archive), "zip_bytes": archive.stat().st_size, "unzipped_bytes": sum(unzipped.values()),
            "by_entry": [(name, zipped[name], unzipped[name]) for name, _ in unzipped.most_common()]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--package", type=pathlib.Path, help="a `make package` output directory to measure")
    parser.add_argument("--source-only", action="store_true", help="part 1 alone, wall and CPU time")
    args = parser.parse_args()
    if args.source_only:
        with tempfile.TemporaryDirectory() as scratch:
            measure_source(runs=args.runs, env=clean_env(DATABASE_URL=f"sqlite:///{scratch}/jobs.db"),
                           pycache=f"{scratch}/pycache")
        return 0

    with tempfile.TemporaryDirectory() as scratch:
        env = clean_env(DATABASE_URL=f"sqlite:///{scratch}/jobs.db")
        bare, floor, with_app = [], [], []
        for _ in range(args.runs):  # interleaved, so a busy moment of the machine hits all three
            bare += wall("pass", runs=1, env=env)
            floor += wall(FLOOR, runs=1, env=env)
            with_app += wall("import app", runs=1, env=env)
        submit_env = dict(env, API_TOKENS="bench")
        submitted = first_submit(runs=max(args.runs // 3, 3), env=submit_env)
        local = first_use(runs=max(args.runs // 3, 3), env=env)
        aws_env = clean_env(DATABASE_URL=f"sqlite:///{scratch}/jobs-aws.db", QUEUE_BACKEND="sqs",
                            JOBS_QUEUE_URL="https://sqs.us-east-1.amazonaws.com/123456789012/jobs",
                            WEBHOOKS_QUEUE_URL="https://sqs.us-east-1.amazonaws.com/123456789012/webhooks",
                            IMAGE_STORE="s3://bucket/images", AWS_DEFAULT_REGION="us-east-1",
                            AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench")
        aws = first_use(runs=max(args.runs // 3, 3), env=aws_env)
        breakdown = import_breakdown(env)
    package = package_sizes(args.package)
    archive = pathlib.Path(package["archive"])
    packaged = from_package(archive, runs=args.runs)
    shipped, source_only, package_floor = packaged["with_bytecode"], packaged["source_only"], packaged["floor"]

    result = {
        "python": sys.version.split()[0],
        "interpreter_ms": {"median": statistics.median(bare) * 1000, "min": min(bare) * 1000},
        "import_app_ms": {"median": statistics.median(with_app) * 1000, "min": min(with_app) * 1000},
        "app_import_only_ms": (statistics.median(with_app) - statistics.median(bare)) * 1000,
        "floor_ms": {"median": statistics.median(floor) * 1000, "min": min(floor) * 1000},
        "app_over_floor": statistics.median(with_app) / statistics.median(floor),
        "package_app_over_floor": statistics.median(shipped) / statistics.median(package_floor),
        "first_submit_ms": statistics.median(submitted),
        "package_import_app_ms": {"with_bytecode": statistics.median(shipped) * 1000,
                                  "source_only": statistics.median(source_only) * 1000},
        "first_use_context_ms": {"local_sqlite": statistics.median(local) * 1000,
                                 "sqs_s3_sqlite": statistics.median(aws) * 1000},
        "import_self_ms_by_package": breakdown[:15],
        "package": package,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "cold_start.json").write_text(json.dumps(result, indent=2))

    print(f"| measure ({args.runs} runs) | ms: median (min–max) |\n|---|---|")
    print(f"| `python -c pass` (interpreter alone) | {spread(bare)} |")
    print(f"| floor: chalice + one pydantic model validating one value | {spread(floor)} |")
    print(f"| `python -c 'import app'` | {spread(with_app)} |")
    print(f"| `import app` ÷ floor (goal ≤ 1.5) | {result['app_over_floor']:.2f} |")
    print(f"| floor from deployment.zip, as Lambda runs it | {spread(package_floor)} |")
    print(f"| `import app` from deployment.zip ÷ floor from it | {result['package_app_over_floor']:.2f} |")
    print(f"| first submit in a fresh process (import, context, store, 202) | "
          f"{spread([ms / 1000 for ms in submitted])} |")
    print(f"| app.py's own import (difference) | {result['app_import_only_ms']:.0f} |")
    print(f"| `import app` from deployment.zip as Lambda runs it, with the bytecode `make package` adds | "
          f"{result['package_import_app_ms']['with_bytecode']:.0f} |")
    print(f"| the same, sources only (as `chalice package` ships them) | "
          f"{result['package_import_app_ms']['source_only']:.0f} |")
    context_ms = result["first_use_context_ms"]
    print(f"| first use: build the context, local queue + DB images | {context_ms['local_sqlite']:.0f} |")
    print(f"| first use: build the context, SQS + S3 adapters | {context_ms['sqs_s3_sqlite']:.0f} |")
    print("\n| package (self import time) | ms |\n|---|---|")
    for name, ms in breakdown[:12]:
        print(f"| {name} | {ms:.1f} |")
    print(f"\ndeployment.zip: {package['zip_bytes'] / 1e6:.1f} MB zipped, "
          f"{package['unzipped_bytes'] / 1e6:.1f} MB unzipped\n\n| entry | zipped MB | unzipped MB |\n|---|---|---|")
    for name, zipped_size, unzipped_size in package["by_entry"][:12]:
        print(f"| {name} | {zipped_size / 1e6:.2f} | {unzipped_size / 1e6:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
