"""`python -m tests.a1111_sim`: serve the simulated A1111 until SIGINT/SIGTERM."""
from __future__ import annotations

import argparse
import signal
import threading

from tests.a1111_sim import server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.a1111_sim", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860, help="0 picks a free port")
    parser.add_argument("--gen-seconds", type=float, default=0.5, help="time one generation takes")
    parser.add_argument("--auth", default="", help="user:pass[,user2:pass2], like --api-auth")
    parser.add_argument("--hang-seconds", type=float, default=300.0,
                        help="how long a hang fault stalls a generation")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    parser.add_argument("--catalog", default="default", choices=sorted(server.CATALOGS),
                        help="which model/LoRA/sampler lists to serve (`second` plays another instance)")
    parser.add_argument("--noise-images", action="store_true",
                        help="images of random noise, which PNG cannot compress (real image sizes)")
    args = parser.parse_args(argv)

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    sim = server.SimulatedA1111(host=args.host, port=args.port, gen_seconds=args.gen_seconds,
                                auth=args.auth, hang_seconds=args.hang_seconds,
                                verbose=args.verbose, catalog=args.catalog,
                                noise_images=args.noise_images).start()
    try:
        print(f"A1111 simulator {server.VERSION} ready on {sim.url}", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
