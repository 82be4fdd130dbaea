"""`make local`: Chalice's dev server (`chalice local`, autoreload on) and a worker, stopped together.

The counterpart of `make run` (scripts/serve_all.py, whose watch, stop and banner it reuses) for
people who want Chalice's dev server: an edit to the code reloads the API, and the worker runs the
jobs, which `chalice local` does not (it runs no SQS handler and no schedule). Without API_TOKENS
both use the checkout's development token (chalicelib/dev_token.py). Ctrl-C or SIGTERM stops both;
it exits 0 when both stopped cleanly, non-zero when either died on its own.

`chalice local` is two processes, a parent that restarts a serving child. It gets a process group of
its own and is stopped with SIGINT, which its parent handles by stopping the child; SIGKILL for
anything left after the timeout. PYTHONDONTWRITEBYTECODE: a bytecode cache written into the project
folder (by the worker importing a module first) would restart the dev server.
"""
from __future__ import annotations

import logging
import os
import pathlib
import signal
import subprocess
import sys

import serve_all  # beside this script; it puts the project folder on sys.path

from chalicelib import config  # noqa: E402
from chalicelib import dev_token  # noqa: E402
from chalicelib import logs  # noqa: E402

log = logging.getLogger("supervisor")

DEV_SERVER_STOP_SECONDS = 10.0


def main() -> int:
    os.environ["PYTHONUNBUFFERED"] = "1"
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
    token = None if os.environ.get("API_TOKENS") else dev_token.install(os.environ)
    settings = config.get_settings()
    logs.configure(settings.log_level)
    chalice = pathlib.Path(sys.executable).parent / "chalice"

    stopping: list[str] = []

    def stop(signum: int, _frame) -> None:
        stopping.append(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    worker_timeout = settings.worker_shutdown_grace + serve_all.STOP_MARGIN_SECONDS
    processes: dict[str, subprocess.Popen] = {}
    exit_code = 1  # unless the watch below ends as it should
    try:
        processes["api"] = subprocess.Popen(
            [str(chalice), "local", "--host", settings.host, "--port", str(settings.port)],
            cwd=serve_all.ROOT, start_new_session=True)
        processes["worker"] = subprocess.Popen([sys.executable, "-m", "worker_fn"], cwd=serve_all.ROOT)
        for name, process in processes.items():
            log.info("%s started", name, extra={"child": name, "pid": process.pid})
        serve_all.print_banner(settings, token)
        exit_code = serve_all.watch(processes, stopping)
    finally:  # whatever happened, no child outlives this process
        api = processes.pop("api", None)
        if api is not None and api.poll() is None:
            os.killpg(api.pid, signal.SIGINT)
        clean = serve_all.stop_all(processes, timeout=worker_timeout)
        if api is not None and not stop_dev_server(api, timeout=DEV_SERVER_STOP_SECONDS):
            clean = False
        if not clean:
            exit_code = exit_code or 1
    log.info("stopped", extra={"exit_code": exit_code})
    return exit_code


def stop_dev_server(process: subprocess.Popen, *, timeout: float) -> bool:
    """Wait for `chalice local` (already sent SIGINT); True when it stopped by itself with code 0.

    Its serving child is killed with the group when it is still there, even after a clean exit.
    """
    try:
        clean = process.wait(timeout=timeout) == 0
    except subprocess.TimeoutExpired:
        log.error("chalice local did not stop within %.0f s; killed", timeout, extra={"child": "api"})
        clean = False
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
    return clean


if __name__ == "__main__":
    sys.exit(main())
