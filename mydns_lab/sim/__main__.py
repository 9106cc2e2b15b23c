"""``python -m mydns_lab.sim``: run the simulator over a range of seeds and
print every violation with the command that replays it.

    python -m mydns_lab.sim --seeds 1000            # sweep seeds 0..999
    python -m mydns_lab.sim --seed-start 17 --seeds 1 --trace   # replay one
"""

from __future__ import annotations

import multiprocessing
import sys
import time

from ..cmdline import UsageParser
from .engine import SimConfig, SimResult, replay_command, run_seed


def _run_quiet(args: tuple[int, SimConfig]) -> SimResult:
    seed, config = args
    result = run_seed(seed, config, trace=False)
    if not result.ok:
        result = run_seed(seed, config, trace=True)  # replay with the trace for the report
    return result


def main(argv: list[str] | None = None) -> int:
    parser = UsageParser(prog="python -m mydns_lab.sim", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=100, help="how many seeds to run (default 100)")
    parser.add_argument("--seed-start", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--nodes", type=int, default=5, help="cluster size (default 5)")
    parser.add_argument("--jobs", type=int, default=0, help="worker processes (default: one per core)")
    parser.add_argument("--trace", action="store_true", help="print each run's event trace")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.nodes < 1:
        parser.error("--seeds and --nodes must be at least 1")
    config = SimConfig(nodes=args.nodes)
    seeds = range(args.seed_start, args.seed_start + args.seeds)
    started = time.monotonic()
    failures: list[SimResult] = []
    applied = operations = 0
    if args.trace or args.seeds == 1:
        results = (run_seed(s, config, trace=True) for s in seeds)
    else:
        jobs = args.jobs or multiprocessing.cpu_count()
        pool = multiprocessing.Pool(jobs)
        results = pool.imap(_run_quiet, [(s, config) for s in seeds], chunksize=4)
    for done, result in enumerate(results, 1):
        applied += result.applied
        operations += result.operations
        if args.trace:
            print("\n".join(result.trace))
        if not result.ok:
            failures.append(result)
            print(f"seed {result.seed}: VIOLATION {result.violation}", flush=True)
            if not args.trace:
                print("  last events:\n    " + "\n    ".join(result.trace[-15:]))
            print(f"  replay: {replay_command(result.seed, args.nodes)}", flush=True)
        if done % 100 == 0:
            print(f"... {done} seeds, {len(failures)} violations, "
                  f"{time.monotonic() - started:.0f} s", flush=True)
    elapsed = time.monotonic() - started
    print(f"seeds={args.seeds} nodes={args.nodes} violations={len(failures)} "
          f"entries_applied={applied} client_ops={operations} wall={elapsed:.1f}s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
