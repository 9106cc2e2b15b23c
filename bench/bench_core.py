"""Committed entries per second through five Raft cores, no I/O.

Five nodes in one process, memory storage, a perfect in-order network. The
leader gets proposals in batches (as a loaded server would between two Ready
batches), every Ready goes through host.handle_ready, and an entry counts
when all five nodes have applied it. Measures the core's own cost: the
ceiling the lab harness can approach.

    .venv/bin/python bench/bench_core.py [--entries 200000] [--batch 100]

Target (issue 2): at least 20,000 entries/s.
"""

from __future__ import annotations

import argparse
import collections
import random
import time

from mydns_lab.host import handle_ready
from mydns_lab.raft import Config, RaftNode, Ready, Role
from mydns_lab.storage.base import MemoryStorage


def run(total: int, batch: int, nodes: int, payload: int) -> tuple[float, int]:
    peers = tuple(range(1, nodes + 1))
    storages = {i: MemoryStorage() for i in peers}
    cores = {i: RaftNode(Config(i, peers), storages[i].load(), random.Random(i)) for i in peers}
    wire: collections.deque = collections.deque()
    applied = {i: 0 for i in peers}

    def applier(i: int):
        def apply(rd: Ready) -> None:
            applied[i] += sum(1 for e in rd.committed_entries if e.data)
        return apply

    appliers = {i: applier(i) for i in peers}

    def settle() -> None:
        busy = True
        while busy:
            busy = False
            for i in peers:
                while handle_ready(cores[i], storages[i], wire.append, appliers[i]) is not None:
                    busy = True
            while wire:
                msg = wire.popleft()
                cores[msg.dst].step(msg)
                busy = True

    while not any(c.role is Role.LEADER for c in cores.values()):
        for c in cores.values():
            c.tick()
        settle()
    leader = next(c for c in cores.values() if c.role is Role.LEADER)
    data = b"x" * payload
    started = time.perf_counter()
    proposed = 0
    while proposed < total:
        for _ in range(batch):
            leader.propose(data)
        proposed += batch
        settle()
    elapsed = time.perf_counter() - started
    assert all(n == proposed for n in applied.values()), applied
    return elapsed, proposed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--payload", type=int, default=100, help="bytes per entry")
    args = parser.parse_args()
    for batch in sorted({1, 10, args.batch}):
        total = args.entries if batch == args.batch else min(args.entries, 20_000 * batch)
        elapsed, count = run(total, batch, args.nodes, args.payload)
        print(f"nodes={args.nodes} batch={batch:>4} entries={count:>7} "
              f"time={elapsed:6.2f}s  committed_entries_per_s={count / elapsed:>10,.0f}")


if __name__ == "__main__":
    main()
