"""CPU time per acknowledged put, by role: where the lab's CPU goes.

Puts per second move with this machine's speed and with whatever else runs
on its two cores; the CPU each process spends per acknowledged put moves
much less, and it says which process a change made cheaper. Starts a lab
(3 servers and 3 front ends by default, fsync on), drives it with the
throughput benchmark's closed loop (bench/putload.py, 64 uploaders), lets
it settle, then reads every process's CPU time (user + system, psutil)
around a window of ``--seconds`` and divides by the puts acknowledged in
it. ``--rounds`` windows, each on a lab of its own:

    .venv/bin/python bench/cpu_per_put.py [--rounds 3] [--seconds 8]

prints per round: acked puts/s, then microseconds per put for the leader,
each follower, each front end (the one that took a put and the two that
only update their copies share the load evenly), the router and this
process's load loop.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import host_line  # noqa: E402  (a sibling script)
from putload import PutLoad  # noqa: E402

from mydns_lab.experiments.labprocess import LabProcess, wait_for  # noqa: E402

SETTLE_S = 2.0
"""Load before the window opens: past the claims and the first batches."""


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def roles(lab: LabProcess) -> dict[str, psutil.Process]:
    """The lab's processes by role (``leader``, ``follower s2``,
    ``frontend c0``, ``router``), from their titles and status.json."""
    status = json.loads((lab.data_dir / "status.json").read_text())
    leader = f"mydns server s{status['leader']}"
    found = {}
    for pid in lab.descendants():
        try:
            process = psutil.Process(pid)
            title = " ".join(process.cmdline()).strip()  # titles are padded
        except psutil.NoSuchProcess:
            continue
        if title == leader:
            found["leader"] = process
        elif title.startswith("mydns server "):
            found["follower " + title.split()[-1]] = process
        elif title.startswith(("mydns frontend ", "mydns router")):
            found[title.removeprefix("mydns ")] = process
    return found


def one_round(nservers: int, nclerks: int, clients: int, seconds: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="mydns-bench-cpu-") as tmp:
        lab = LabProcess(Path(tmp) / "data", "--fresh", nservers=nservers, nclerks=nclerks)
        with lab:
            wait_for(lambda: json.loads((lab.data_dir / "status.json").read_text()).get("leader"),
                     30, f"a leader ({lab.replay})")
            load = PutLoad(lab.servers(), clients)
            try:
                load.claim()
                procs = roles(lab)
                window: dict[str, float] = {}

                def measure() -> None:
                    """Reads the counters around the window, beside the load loop."""
                    time.sleep(SETTLE_S)  # a fixed settling time, not a wait for an outcome
                    before = {role: cpu_seconds(p) for role, p in procs.items()}
                    mine, acked = time.process_time(), load.acked
                    time.sleep(seconds)  # the measuring window itself
                    window.update({role: cpu_seconds(p) - before[role]
                                   for role, p in procs.items()})
                    window["load loop"] = time.process_time() - mine
                    window["acked"] = load.acked - acked

                reader = threading.Thread(target=measure)
                reader.start()
                load.run(SETTLE_S + seconds + 0.5)
                reader.join()
            finally:
                load.close()
    acked = window.pop("acked")
    return {"acked_puts_per_s": round(acked / seconds),
            "us_per_put": {role: round(used * 1e6 / acked) for role, used in sorted(window.items())}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--nservers", type=int, default=3)
    parser.add_argument("--nclerks", type=int, default=3)
    args = parser.parse_args()
    print(host_line(), flush=True)
    for r in range(1, args.rounds + 1):
        print(f"round {r}: {json.dumps(one_round(args.nservers, args.nclerks, args.clients, args.seconds))}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
