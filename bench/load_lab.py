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
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from putload import LoadResult, PutLoad  # noqa: E402  (a sibling script, not a package)


def load(port: int, front_ends: int, clients: int, seconds: float) -> dict[str, float]:
    servers = [("127.0.0.1", port + i) for i in range(front_ends)]
    putload = PutLoad(servers, clients)
    last = 0

    def report(so_far: LoadResult, elapsed: float) -> None:
        nonlocal last
        print(f"t={elapsed:5.1f}s puts/s={so_far.acked - last} "
              f"failed={so_far.refused + so_far.timed_out}", flush=True)
        last = so_far.acked

    try:
        putload.claim()  # so the load is updates
        result = putload.run(seconds, report)
    finally:
        putload.close()
    return {"acked": result.acked, "failed": result.refused + result.timed_out,
            "seconds": round(result.seconds, 2), "puts_per_s": round(result.acked / result.seconds)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9876, help="front end 0's port (9876)")
    parser.add_argument("--front-ends", type=int, default=3)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    print(json.dumps(load(args.port, args.front_ends, args.clients, args.seconds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
