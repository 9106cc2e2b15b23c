"""A front end's memory under a flood of hostile JSON Puts.

Starts the real service (3 servers, 2 front ends) on loopback with a fresh
data folder, sends front end 0 Puts whose ``Seq`` no codec can carry
(2**64, the datagram that once leaked a clerk each), one at a time, and
prints how many got an error reply and how much the front end's resident
memory grew from after a warm-up of the same requests to the end.

    .venv/bin/python bench/bench_hostile.py [--puts 3000]

Target (issue 11): every Put answered with an error; growth < 2 MB.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mydns_lab.experiments.labprocess import LabProcess

WARM_UP = 300
REPLY_TIMEOUT_S = 2.0


def front_end_process(lab: LabProcess, port: int) -> psutil.Process:
    """The lab's process that holds the UDP socket on ``port``."""
    for pid in lab.descendants():
        try:
            process = psutil.Process(pid)
            if any(c.laddr and c.laddr.port == port for c in process.net_connections("udp")):
                return process
        except psutil.Error:
            continue
    raise SystemExit(f"no process of the lab listens on UDP port {port}")


def flood(server: tuple[str, int], puts: int, first_id: int) -> tuple[int, int]:
    """Send ``puts`` out-of-range Puts one by one; (error replies, no reply)."""
    errors = silent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(server)
        sock.settimeout(REPLY_TIMEOUT_S)
        for i in range(puts):
            request = {"Type": "Put", "Key": f"h{i % 50}", "Value": "10.0.0.1",
                       "Token": "bench", "Seq": 2**64, "Id": first_id + i}
            sock.send(json.dumps(request).encode())
            try:
                reply = json.loads(sock.recv(65535))
            except socket.timeout:
                silent += 1
                continue
            errors += reply.get("Type") == "Error" and reply.get("Id") == first_id + i
    return errors, silent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--puts", type=int, default=3000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mydns-bench-") as tmp, \
            LabProcess(Path(tmp) / "data", nservers=3, nclerks=2, seed=1) as lab:
        server = lab.servers()[0]
        process = front_end_process(lab, server[1])
        flood(server, WARM_UP, 0)
        before = process.memory_info().rss
        started = time.monotonic()
        errors, silent = flood(server, args.puts, WARM_UP)
        elapsed = time.monotonic() - started
        after = process.memory_info().rss
    grown_mb = (after - before) / 2**20
    print(f"{args.puts} Puts with Seq 2**64 to one front end in {elapsed:.1f} s: "
          f"{errors} error replies, {silent} unanswered; "
          f"front end RSS {before / 2**20:.1f} -> {after / 2**20:.1f} MB "
          f"(grew {grown_mb:+.2f} MB; target < 2 MB)")
    return 0 if errors == args.puts and grown_mb < 2 else 1


if __name__ == "__main__":
    sys.exit(main())
