"""A steady put load on a lab that is already running, to profile it.

``bench_lab.py`` starts its own lab; this drives one you started (so a
profiler can attach to its processes by title, ``mydns server s2``...):
``--clients`` clients, each with one name and one put in flight, spread
over the front ends from ``--port``, for ``--seconds``, printing the
acknowledged puts each second and a JSON summary at the end.

    .venv/bin/python -m mydns_lab --no-dashboard --nservers 3 --nclerks 3 \\
        --port 23876 --http-port 0 --data-dir /tmp/prof-data --fresh &
    .venv/bin/python bench/load_lab.py --port 23876 --front-ends 3 --clients 64 --seconds 60

docs/performance.md was measured this way.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_lab import Uploader  # noqa: E402  (a sibling script, not a package)

PUT_TIMEOUT_S = 2.0


async def load(port: int, front_ends: int, clients: int, seconds: float) -> dict[str, float]:
    servers = [("127.0.0.1", port + i) for i in range(front_ends)]
    uploaders = [Uploader(f"load{i:03d}", servers[i % front_ends]) for i in range(clients)]
    for uploader in uploaders:   # each claims its name first, so the load is updates
        await uploader.open()
        while not await uploader.put(PUT_TIMEOUT_S):
            pass
    acked = failed = 0
    started = time.monotonic()
    end = started + seconds

    async def client(uploader: Uploader) -> None:
        nonlocal acked, failed
        while time.monotonic() < end:
            if await uploader.put(PUT_TIMEOUT_S):
                acked += 1
            else:
                failed += 1

    async def report() -> None:
        last = 0
        while time.monotonic() < end:
            await asyncio.sleep(1.0)  # the reporting period, not a wait for an outcome
            print(f"t={time.monotonic() - started:5.1f}s puts/s={acked - last} "
                  f"failed={failed}", flush=True)
            last = acked

    await asyncio.gather(report(), *(client(u) for u in uploaders))
    elapsed = time.monotonic() - started
    return {"acked": acked, "failed": failed, "seconds": round(elapsed, 2),
            "puts_per_s": round(acked / elapsed)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9876, help="front end 0's port (9876)")
    parser.add_argument("--front-ends", type=int, default=3)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(load(args.port, args.front_ends, args.clients, args.seconds))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
