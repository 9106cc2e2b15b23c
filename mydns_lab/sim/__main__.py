"""``python -m mydns_lab.sim``: run the simulator over a range of seeds and
print every violation with the command that replays it.

    python -m mydns_lab.sim --seeds 1000            # sweep seeds 0..999
    python -m mydns_lab.sim --seed-start 17 --seeds 1 --trace   # replay one
    python -m mydns_lab.sim --nodes 3 --no-wiped-vote-guard     # without the guard
    python -m mydns_lab.sim --no-wiped-protection               # a wiped node votes at once
    python -m mydns_lab.sim --no-check-quorum --no-pre-vote     # the plain Raft of the paper
    python -m mydns_lab.sim --scenario wiped-vote --seeds 10    # the scripted double vote
"""

from __future__ import annotations

import multiprocessing
import sys
import time

from ..cmdline import UsageParser
from .engine import (WIPED_VOTE_SCENARIO, SimConfig, SimResult, replay_command, run_scenario,
                     run_seed, wiped_vote_config)


def _run_one(seed: int, config: SimConfig, scenario: str, trace: bool) -> SimResult:
    if scenario:
        return run_scenario(seed, config, trace=trace)
    return run_seed(seed, config, trace=trace)


def _run_quiet(args: tuple[int, SimConfig, str]) -> SimResult:
    seed, config, scenario = args
    result = _run_one(seed, config, scenario, trace=False)
    if not result.ok:
        result = _run_one(seed, config, scenario, trace=True)  # the trace, for the report
    return result


def _switched_off(config: SimConfig, scenario: str) -> list[str]:
    """The protections this run has off, for the summary line (a scenario
    chooses pre-vote and check-quorum itself; only its guard is a flag)."""
    flags = {"wiped_vote_guard": config.wiped_vote_guard,
             "wiped_protection": config.wiped_protection}
    if not scenario:
        flags.update(pre_vote=config.pre_vote, check_quorum=config.check_quorum)
    return [name for name, on in flags.items() if not on]


def main(argv: list[str] | None = None) -> int:
    parser = UsageParser(prog="python -m mydns_lab.sim", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=100, help="how many seeds to run (default 100)")
    parser.add_argument("--seed-start", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--nodes", type=int, default=5, help="cluster size (default 5)")
    parser.add_argument("--jobs", type=int, default=0, help="worker processes (default: one per core)")
    parser.add_argument("--trace", action="store_true", help="print each run's event trace")
    parser.add_argument("--no-wiped-vote-guard", dest="wiped_vote_guard", action="store_false",
                        help="let a node that lost its disk vote again without first learning "
                             "the others' terms (to show what the guard prevents)")
    parser.add_argument("--no-wiped-protection", dest="wiped_protection", action="store_false",
                        help="treat a node that lost its disk as an ordinary follower at once "
                             "(no catch-up, no term survey), to show what that protection buys")
    parser.add_argument("--no-pre-vote", dest="pre_vote", action="store_false",
                        help="campaign without a pre-vote round")
    parser.add_argument("--no-check-quorum", dest="check_quorum", action="store_false",
                        help="leaders never step down for want of a quorum, and voters keep "
                             "no leader lease")
    parser.add_argument("--scenario", choices=[WIPED_VOTE_SCENARIO], default="",
                        help="run a scripted scenario instead of random chaos (3 nodes)")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.nodes < 1:
        parser.error("--seeds and --nodes must be at least 1")
    if args.scenario and not args.wiped_protection:
        parser.error("--scenario wiped-vote needs the wiped-node protection; drop "
                     "--no-wiped-protection (--no-wiped-vote-guard switches off its survey)")
    if args.scenario:
        config = wiped_vote_config(args.wiped_vote_guard)  # the scenario sets the rest
        args.nodes = config.nodes
    else:
        config = SimConfig(nodes=args.nodes, wiped_vote_guard=args.wiped_vote_guard,
                           wiped_protection=args.wiped_protection,
                           pre_vote=args.pre_vote, check_quorum=args.check_quorum)
    seeds = range(args.seed_start, args.seed_start + args.seeds)
    started = time.monotonic()
    failures: list[SimResult] = []
    applied = operations = 0
    if args.trace or args.seeds == 1:
        results = (_run_one(s, config, args.scenario, trace=True) for s in seeds)
    else:
        jobs = args.jobs or multiprocessing.cpu_count()
        pool = multiprocessing.Pool(jobs)
        results = pool.imap(_run_quiet, [(s, config, args.scenario) for s in seeds], chunksize=4)
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
            replay = replay_command(result.seed, args.nodes, scenario=args.scenario,
                                    config=config)
            print(f"  replay: {replay}", flush=True)
        if done % 100 == 0:
            print(f"... {done} seeds, {len(failures)} violations, "
                  f"{time.monotonic() - started:.0f} s", flush=True)
    elapsed = time.monotonic() - started
    shape = f" scenario={args.scenario}" if args.scenario else ""
    off = "".join(f" {name}=off" for name in _switched_off(config, args.scenario))
    print(f"seeds={args.seeds} nodes={args.nodes}{shape}{off} violations={len(failures)} "
          f"entries_applied={applied} client_ops={operations} wall={elapsed:.1f}s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
