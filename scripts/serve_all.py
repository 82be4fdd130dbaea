"""The API (waitress) and the worker as two processes: the container's default command, `make run`
and `make demo`.

A small supervisor. It stops both when either dies, and exits non-zero then, so that an orchestrator
restarts the whole container. SIGTERM or SIGINT is passed on to both, which stop gracefully (the
API answers the requests in flight, the worker finishes or releases its job); it waits for them
and exits 0 when both stopped cleanly. Its own lines are JSON like theirs.

`--dev-token` (what `make run` and `make demo` pass): without API_TOKENS, use the checkout's
development token (chalicelib/dev_token.py: created once, kept outside the project folder) and print
it. Without the flag nothing is created: a container without API_TOKENS logs a warning and every
protected route answers 401 saying so.
"""
from __future__ import annotations

import argparse
import logging
import os
import pathlib
import signal
import subprocess
import sys
import time

import pydantic

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: chalicelib lives beside scripts/

from chalicelib import config  # noqa: E402
from chalicelib import dev_token  # noqa: E402
from chalicelib import logs  # noqa: E402

log = logging.getLogger("supervisor")

POLL_SECONDS = 0.2
STOP_MARGIN_SECONDS = 10.0  # beyond the longer grace: time to release a job and close connections


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dev-token", action="store_true",
                        help="without API_TOKENS, use the development token (created once) and print it")
    parser.add_argument("--with-simulator", action="store_true",
                        help="also run the A1111 simulator (tests/a1111_sim) and point the worker at it")
    parser.add_argument("--simulator-port", type=int, default=7860)
    args = parser.parse_args()

    # The children inherit this environment, and read the same settings as this process.
    os.environ["PYTHONUNBUFFERED"] = "1"
    token = None
    if not os.environ.get("API_TOKENS") and args.dev_token:
        token = dev_token.install(os.environ)
    if args.with_simulator:
        os.environ["A1111_BASE_URL"] = f"http://127.0.0.1:{args.simulator_port}"
    try:
        settings = config.get_settings()  # a bad setting stops everything now, with its reason
    except pydantic.ValidationError as exc:  # its text never holds a value (hide_input_in_errors)
        print(f"configuration error: {exc}", file=sys.stderr, flush=True)
        return 2
    logs.configure(settings.log_level)
    if not settings.api_tokens:
        log.warning("API_TOKENS is not set: every route except /health, /doc and /openapi.json answers 401 "
                    "until it is (API_TOKENS=name:token,other:token2)")

    commands = {}
    if args.with_simulator:
        commands["a1111-simulator"] = [sys.executable, "-m", "tests.a1111_sim", "--host", "127.0.0.1",
                                       "--port", str(args.simulator_port), "--gen-seconds", "3"]
    commands["api"] = [sys.executable, "wsgi.py"]
    commands["worker"] = [sys.executable, "-m", "worker_fn"]

    stopping: list[str] = []

    def stop(signum: int, _frame) -> None:
        stopping.append(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    stop_timeout = max(settings.api_shutdown_grace, settings.worker_shutdown_grace) + STOP_MARGIN_SECONDS
    processes: dict[str, subprocess.Popen] = {}
    exit_code = 1  # unless the watch below ends as it should
    try:
        for name, command in commands.items():
            processes[name] = subprocess.Popen(command, cwd=ROOT)
            log.info("%s started", name, extra={"child": name, "pid": processes[name].pid})
            if name == "a1111-simulator":
                time.sleep(1.0)
        if args.dev_token:
            print_banner(settings, token)
        exit_code = watch(processes, stopping)
    finally:  # whatever happened, no child outlives this process
        if not stop_all(processes, timeout=stop_timeout):
            exit_code = exit_code or 1
    log.info("stopped", extra={"exit_code": exit_code})
    return exit_code


def watch(processes: dict[str, subprocess.Popen], stopping: list[str]) -> int:
    """Wait for a signal (then 0) or for a child to exit (then its failure code)."""
    while not stopping:
        for name, process in processes.items():
            if process.poll() is not None:
                log.error("%s exited with %s; stopping the others", name, process.returncode,
                          extra={"child": name, "exit_code": process.returncode})
                return _failure_code(process.returncode)
        time.sleep(POLL_SECONDS)
    log.info("stopping on %s", stopping[0], extra={"signal": stopping[0]})
    return 0


def stop_all(processes: dict[str, subprocess.Popen], *, timeout: float) -> bool:
    """SIGTERM to each running process, then wait for all; kill what is left after `timeout`.

    True when every process stopped by itself with exit code 0 (or had already exited).
    """
    for process in processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    clean = True
    for name, process in processes.items():
        try:
            code = process.wait(timeout=max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            log.error("%s did not stop within %.0f s; killed", name, timeout, extra={"child": name})
            process.kill()
            process.wait()
            clean = False
            continue
        if code not in (0, -signal.SIGTERM):
            clean = False
    return clean


def print_banner(settings: config.Settings, token: str | None) -> None:
    """What `make run` shows a person: where the API is and a command to try."""
    port = settings.port
    shown = token or "<one of your API_TOKENS>"
    print(f"\nAPI on http://127.0.0.1:{port}  (A1111: {settings.a1111_base_url})")
    if token:
        print(f"development token (API_TOKENS was not set): {token}")
    print(f"try:  curl -s -X POST http://127.0.0.1:{port}/sdapi/v1/txt2img "
          f"-H 'Authorization: Bearer {shown}' -d '{{\"prompt\": \"a lighthouse\", \"steps\": 20}}'\n",
          flush=True)


def _failure_code(returncode: int) -> int:
    """Never 0 for a process that died on its own; 128 + N for one killed by signal N (as a shell says)."""
    if returncode < 0:
        return 128 - returncode
    return returncode or 1


if __name__ == "__main__":
    sys.exit(main())
