"""Saves per second of FileStorage, fsync on: the Raft hot path.

Run: ``.venv/bin/python bench/bench_storage.py [--dir FOLDER] [--seconds S]``

Each case saves batches of entries of ``--entry-bytes`` bytes, moving the
commit index as a leader's Ready does, for ``--seconds``; two more cases show
a commit-only save (one small append) and a vote (hardstate rename). The
folder should sit on the disk the servers will use: fsync on tmpfs is free.
A benchmark, not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

from mydns_lab.core.messages import Entry, HardState
from mydns_lab.storage.files import FileStorage

SaveCase = Callable[[FileStorage, int], int]
"""Does save number ``i`` on the storage; returns how many entries it wrote."""


def entries_case(batch: int, entry_bytes: int, rng: random.Random) -> SaveCase:
    """Append ``batch`` entries and commit the previous batch, like a leader."""
    data = rng.randbytes(entry_bytes)
    next_index = [1]

    def save(storage: FileStorage, i: int) -> int:
        first = next_index[0]
        entries = [Entry(1, first + k, data) for k in range(batch)]
        storage.save(HardState(1, 1, first - 1), entries, None)
        next_index[0] = first + batch
        return batch

    return save


def commit_only(storage: FileStorage, i: int) -> int:
    storage.save(HardState(1, 1, i + 1), [], None)
    return 0


def vote(storage: FileStorage, i: int) -> int:
    storage.save(HardState(i + 2, 1, 0), [], None)
    return 0


def run_case(folder: Path, case: SaveCase, seconds: float, fsync: bool) -> tuple[int, int, float]:
    """Saves done, entries written and elapsed seconds, in a fresh folder."""
    shutil.rmtree(folder, ignore_errors=True)
    storage = FileStorage(folder, fsync=fsync)
    saves = entries = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        entries += case(storage, saves)
        saves += 1
    elapsed = time.perf_counter() - start
    storage.close()
    return saves, entries, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=None,
                        help="parent folder for the scratch data (default: system temp)")
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of each case")
    parser.add_argument("--entry-bytes", type=int, default=100)
    parser.add_argument("--no-fsync", action="store_true", help="measure without fsync")
    args = parser.parse_args()
    fsync = not args.no_fsync
    rng = random.Random(1)
    cases: list[tuple[str, SaveCase]] = [
        (f"batch {n:>3} x {args.entry_bytes} B", entries_case(n, args.entry_bytes, rng))
        for n in (1, 10, 100)]
    cases += [("commit only", commit_only), ("term/vote change", vote)]
    scratch = Path(tempfile.mkdtemp(prefix="bench_storage-", dir=args.dir))
    print(f"FileStorage in {scratch}, fsync={'on' if fsync else 'off'}, "
          f"{args.seconds:g} s per case")
    print(f"{'case':<20} {'saves/s':>10} {'entries/s':>11} {'us/save':>9}")
    try:
        for name, case in cases:
            saves, entries, elapsed = run_case(scratch / "node", case, args.seconds, fsync)
            print(f"{name:<20} {saves / elapsed:>10,.0f} {entries / elapsed:>11,.0f} "
                  f"{elapsed / saves * 1e6:>9,.0f}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
