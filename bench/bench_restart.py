"""What DNS says while the lab restarts holding many names.

Starts the real lab (3 servers, 3 front ends, fsync on) on loopback, claims
``--names`` names through the JSON protocol, SIGKILLs the launcher and
every process at once, starts the lab again on the same data folder and,
from the moment it is launched, asks every front end in turn for a stored
name picked at random, over UDP DNS, one query at a time. It prints what
each front end answered and when: the first answer of any kind, the first
correct one, what came in all (NXDOMAIN or a wrong address would be a lie
a resolver caches; SERVFAIL and timeouts are not), and what came after the
first correct answer.

    .venv/bin/python bench/bench_restart.py [--names 100000] [--watch 40]
        [--restarts N] [--data-dir DIR]

The target (issue "Resilience"): no lie, ever. The time to the first
correct answer is also the recovery figure of the issue on speed (5 s)."""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import dns.message
import dns.rcode

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import host_line  # noqa: E402  (a sibling script, not a package)

from mydns_lab.clients.jsonclient import AsyncJsonClient  # noqa: E402
from mydns_lab.experiments.labprocess import LabProcess, free_port_range  # noqa: E402

CLIENTS = 64
QUERY_TIMEOUT_S = 0.05


def host_address(i: int) -> str:
    """The address ``host{i}`` is claimed with: a distinct one for every i < 2**24."""
    return f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"


async def claim_names(servers: list[tuple[str, int]], count: int) -> int:
    """Claim host0..host{count-1}, CLIENTS in flight; returns how many were acknowledged."""
    acknowledged = 0
    queue = list(range(count))

    async def worker(index: int) -> None:
        nonlocal acknowledged
        conn = AsyncJsonClient(servers[index % len(servers)])
        await conn.open()
        try:
            while queue:
                i = queue.pop()
                request = {"Type": "Put", "Key": f"host{i}", "Value": host_address(i),
                           "Seq": 1, "Token": "bench-restart"}
                for _ in range(5):
                    reply = await conn.call(request, 3.0)
                    if reply is not None and reply.get("Type") == "PutOk":
                        acknowledged += 1
                        break
        finally:
            conn.close()

    await asyncio.gather(*(worker(i) for i in range(CLIENTS)))
    return acknowledged


def ask(sock: socket.socket, server: tuple[str, int], name: str) -> dns.message.Message | None:
    """One A query for ``name``; its reply (a late reply to an earlier
    query is skipped), or None after QUERY_TIMEOUT_S."""
    query = dns.message.make_query(name, "A")
    sock.sendto(query.to_wire(), server)
    deadline = time.monotonic() + QUERY_TIMEOUT_S
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            reply = dns.message.from_wire(sock.recv(4096))
        except OSError:
            return None
        if reply.id == query.id:
            return reply
    return None


def watch_restart(servers: list[tuple[str, int]], names: int,
                  watch_s: float) -> dict[tuple[str, int], dict]:
    """Ask every front end in turn, for ``watch_s`` seconds from now, for
    one of the ``names`` stored names picked at random (seeded); count
    each front end's answers, and separately those after its first
    correct one."""
    rng = random.Random(1)
    started = time.monotonic()
    seen = {s: {"rcodes": Counter(), "after_ok": Counter(), "first_any": None, "first_ok": None}
            for s in servers}
    sockets = {server: socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for server in servers}
    while time.monotonic() - started < watch_s:
        for server, sock in sockets.items():
            i = rng.randrange(names)
            reply = ask(sock, server, f"host{i}.mydns.")
            record = seen[server]
            if reply is None:
                outcome = "timeout"
            else:
                record["first_any"] = record["first_any"] or time.monotonic() - started
                right = reply.rcode() == dns.rcode.NOERROR and any(
                    host_address(i) in rrset.to_text() for rrset in reply.answer)
                outcome = ("correct" if right else "wrong" if reply.rcode() == dns.rcode.NOERROR
                           else dns.rcode.to_text(reply.rcode()))
            if record["first_ok"] is not None:
                record["after_ok"][outcome] += 1
            elif outcome == "correct":
                record["first_ok"] = time.monotonic() - started
            record["rcodes"][outcome] += 1
    for sock in sockets.values():
        sock.close()
    return seen


def restart_and_watch(data_dir: Path, port: int, names: int,
                      watch_s: float) -> dict[tuple[str, int], dict]:
    """Launch the lab on ``data_dir`` (which holds ``names`` claimed names),
    watch the last name from the moment of launch, then SIGKILL every
    process, so the next restart starts from the same kind of crash."""
    lab = LabProcess(data_dir, nservers=3, nclerks=3, port=port).launch()
    try:
        return watch_restart(lab.servers(), names, watch_s)
    finally:
        lab.kill_everything()


def report(seen: dict[tuple[str, int], dict]) -> int:
    """Print what each front end answered; returns how many lies came
    (NXDOMAIN, or NOERROR without the stored address, for a stored name)."""
    lies = 0
    for server, record in seen.items():
        counts = dict(record["rcodes"])
        lies += counts.get("NXDOMAIN", 0) + counts.get("wrong", 0)
        first_any = f"{record['first_any']:.2f} s" if record["first_any"] else "never"
        first_ok = f"{record['first_ok']:.2f} s" if record["first_ok"] else "never"
        print(f"front end {server[1]}: first answer {first_any}, first correct {first_ok}, "
              f"{counts}; after the first correct: {dict(record['after_ok'])}", flush=True)
    return lies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--names", type=int, default=100_000)
    parser.add_argument("--watch", type=float, default=40.0, metavar="SECONDS")
    parser.add_argument("--restarts", type=int, default=1,
                        help="restarts to time on the same data (after one claim)")
    parser.add_argument("--data-dir", type=Path, metavar="DIR",
                        help="keep the data here; a folder that already holds this "
                             "benchmark's --names is restarted from without claiming, "
                             "so two builds can be timed on the same data")
    args = parser.parse_args()
    print(host_line(), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-restart-") as tmp:
        data_dir = args.data_dir or Path(tmp) / "data"
        port = free_port_range(3, 38455)
        claimed = data_dir.parent / f"{data_dir.name}.claimed-{args.names}"
        if not claimed.exists():
            first = LabProcess(data_dir, nservers=3, nclerks=3, port=port).start()
            try:
                started = time.monotonic()
                acknowledged = asyncio.run(claim_names(first.servers(), args.names))
                print(f"claimed {acknowledged} of {args.names} names in "
                      f"{time.monotonic() - started:.1f} s", flush=True)
            finally:
                first.kill_everything()
            if acknowledged < args.names:
                print("not every name was acknowledged: no restart to time", file=sys.stderr)
                return 1
            claimed.touch()
        lies = 0
        for _ in range(args.restarts):
            lies += report(restart_and_watch(data_dir, port, args.names, args.watch))
    print(f"NXDOMAIN or wrong answers for a stored name: {lies} (target 0)")
    return 1 if lies else 0


if __name__ == "__main__":
    sys.exit(main())
