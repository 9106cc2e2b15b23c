"""Time the linearizability checker on every porcupine fixture.

Run from the repository root: ``.venv/bin/python bench/bench_linearizability.py``
(``--verbose`` lists every file). Prints the time of each group and the
total, and exits 1 if any verdict differs from the published one. A check
that runs out of its budget counts as "unknown": reported, never a mismatch,
because the checker did not guess.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mydns_lab.linearizability.formats import parse_jepsen_register, parse_porcupine_kv
from mydns_lab.linearizability.models import REGISTER_MODEL, KvModel, Model, Operation
from mydns_lab.linearizability.search import LINEARIZABLE, NOT_LINEARIZABLE, UNKNOWN_VERDICT, check

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "porcupine"


@dataclass(frozen=True, slots=True)
class Case:
    """One fixture checked one way, with the verdict porcupine published."""

    group: str
    name: str
    ops: list[Operation]
    model: Model
    expected: str


def cases() -> list[Case]:
    """Every fixture: KV per key, KV as one object, and the etcd logs."""
    found = []
    for path in sorted((FIXTURES / "kv").glob("*.txt")):
        ops = parse_porcupine_kv(path.read_text(encoding="utf-8"), path.name)
        expected = LINEARIZABLE if path.stem.endswith("-ok") else NOT_LINEARIZABLE
        found.append(Case("kv per key", path.name, ops, KvModel(), expected))
        found.append(Case("kv as one object", path.name, ops, KvModel(partition=False), expected))
    etcd = FIXTURES / "jepsen-etcd"
    for line in (etcd / "VERDICTS.txt").read_text(encoding="utf-8").splitlines():
        name, verdict = line.split()
        ops = parse_jepsen_register((etcd / name).read_text(encoding="utf-8"), name)
        found.append(Case("jepsen-etcd", name, ops, REGISTER_MODEL, verdict.replace("-", " ")))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=20.0, metavar="S",
                        help="budget per check in seconds (default 20)")
    parser.add_argument("--verbose", action="store_true", help="print every file's time")
    args = parser.parse_args()
    if not FIXTURES.is_dir():
        print(f"error: no fixtures at {FIXTURES}; check out ../shared beside the clone", file=sys.stderr)
        return 2
    groups: dict[str, list[float]] = {}
    unknown, wrong = [], []
    started = time.perf_counter()
    for case in cases():
        t0 = time.perf_counter()
        verdict = check(case.ops, case.model, timeout_s=args.timeout).verdict
        elapsed_s = time.perf_counter() - t0
        groups.setdefault(case.group, []).append(elapsed_s)
        if verdict == UNKNOWN_VERDICT:
            unknown.append(f"{case.group}: {case.name}")
        elif verdict != case.expected:
            wrong.append(f"{case.group}: {case.name} gave {verdict!r}, published {case.expected!r}")
        if args.verbose:
            print(f"  {case.group:<17} {case.name:<14} {elapsed_s:8.3f} s  {verdict}")
    total_s = time.perf_counter() - started
    for group, times in groups.items():
        print(f"{group:<17} {len(times):>4} checks {sum(times):8.2f} s  (slowest {max(times):.2f} s)")
    print(f"{'total':<17} {sum(map(len, groups.values())):>4} checks {total_s:8.2f} s")
    for line in unknown:
        print(f"unknown within {args.timeout:g} s: {line}")
    for line in wrong:
        print(f"WRONG: {line}")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
