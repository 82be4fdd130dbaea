"""`make run` / `make demo`: the API (waitress) and the worker as two processes.

A small supervisor: it stops both when either dies (so an orchestrator restarts the whole), and
forwards SIGINT/SIGTERM so each stops cleanly. Without API_TOKENS it creates a development token,
keeps it in data/dev-token, and prints it.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import secrets
import signal
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
TOKEN_FILE = ROOT / "data" / "dev-token"


def dev_token() -> str:
    if TOKEN_FILE.exists():
        return TOKEN_FILE.read_text().strip()
    TOKEN_FILE.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    TOKEN_FILE.write_text(token + "\n")
    TOKEN_FILE.chmod(0o600)
    return token


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--with-simulator", action="store_true",
                        help="also run the A1111 simulator (tests/a1111_sim) and point the worker at it")
    parser.add_argument("--simulator-port", type=int, default=7860)
    args = parser.parse_args()

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    token = None
    if not env.get("API_TOKENS"):
        token = dev_token()
        env["API_TOKENS"] = f"dev:{token}"
    commands = {}
    if args.with_simulator:
        commands["a1111-simulator"] = [sys.executable, "-m", "tests.a1111_sim", "--host", "127.0.0.1",
                                       "--port", str(args.simulator_port), "--gen-seconds", "3"]
        env["A1111_BASE_URL"] = f"http://127.0.0.1:{args.simulator_port}"
    commands["api"] = [sys.executable, "wsgi.py"]
    commands["worker"] = [sys.executable, "-m", "worker_fn"]

    processes = {}
    for name, command in commands.items():
        processes[name] = subprocess.Popen(command, cwd=ROOT, env=env)
        if name == "a1111-simulator":
            time.sleep(1.0)
    port = env.get("PORT", "8000")
    shown = token or "<one of your API_TOKENS>"
    print(f"\nAPI on http://127.0.0.1:{port}  (A1111: {env.get('A1111_BASE_URL', 'http://127.0.0.1:7860')})")
    if token:
        print(f"development token (API_TOKENS was not set): {token}")
    print(f"try:  curl -s -X POST http://127.0.0.1:{port}/sdapi/v1/txt2img "
          f"-H 'Authorization: Bearer {shown}' -d '{{\"prompt\": \"a lighthouse\", \"steps\": 20}}'\n",
          flush=True)

    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    exit_code = 0
    while not stopping:
        for name, process in processes.items():
            if process.poll() is not None:
                print(f"{name} exited with {process.returncode}; stopping the rest", flush=True)
                exit_code = process.returncode or 1
                stopping = True
        time.sleep(0.2)
    for process in processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes.values():
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
