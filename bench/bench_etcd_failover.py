"""Kill etcd's leader under load: how long do updates stop, and is what
clients saw linearizable?

Starts a three-member etcd cluster on 127.0.0.2-4 (Debian's etcd, see
mydns_lab.experiments.etcdprocess) and the lab on it with three front ends
and ``--dns-reads linearizable``. ``--writers`` writers each claim
``--names`` names with a token of their own, then update them one Put at a
time with increasing ``Seq`` and addresses 10.W.C>>8.C&255 (C a counter);
``--readers`` readers ask the three front ends for those names over DNS (A),
only once their claims are acknowledged. At ``--kill-at`` s the etcd leader
is SIGKILLed; ``--down`` s later it is started again; ``--after`` s after it
serves again the run stops.

Every operation goes into a porcupine-kv history, in the order the events
happened on this one event loop: a Put is a put of its address (PutOk: ok;
a rule's refusal such as ``stale`` or ``owned``: fail; no answer,
``unavailable`` or any other error: info, outcome unknown); a DNS answer
NOERROR with one A is a get of it, NXDOMAIN a get of "" (the name was
claimed before the read began, so that would be a violation), SERVFAIL or
no answer a fail (dropped: a read that said nothing). The history is
checked with ``python -m mydns_lab.linearizability FILE --format
porcupine-kv``.

Figures: etcd's own election (from the kill until a surviving member names
a surviving leader, polled every 20 ms), the longest interval between
consecutive acknowledged Puts (all writers) from the kill on, the time from
the kill to the first acknowledged Put, and to the first acknowledged Put
sent after the kill, each over the election time.

    .venv/bin/python bench/bench_etcd_failover.py [--writers 4] [--names 3]
        [--readers 6] [--kill-at 3] [--down 5] [--after 2] [--keep]

The history, the etcd and launcher logs stay in the printed folder (etcd's
data folders are removed unless ``--keep`` or the verdict is not
"linearizable").
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dnslib

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mydns_lab.clients.jsonclient import AsyncJsonClient
from mydns_lab.experiments.etcdprocess import MACHINES, EtcdCluster, Member, etcd_binary
from mydns_lab.experiments.labprocess import REPO, LabProcess, free_port_range

ZONE = "mydns."
PUT_TIMEOUT_S = 4.0      # the front end answers `unavailable` after 3 s
DNS_TIMEOUT_S = 3.0      # a linearizable read answers SERVFAIL after 2 s
ELECTION_POLL_S = 0.02
CHECK_TIMEOUT_S = 120.0
DEFINITE_REFUSALS = {"owned", "stale", "open", "nospace", "zone_full", "reserved",
                     "token_required", "rate_limited"}
"""Codes of a Put the rules refused: it did not happen. Any other error
(``unavailable``, ``internal``, ``invalid`` from 'etcd refused the change')
is an unknown outcome."""


@dataclass
class Run:
    """What the clients saw: the history and the figures' raw times."""

    t0: float = field(default_factory=time.monotonic)
    lines: list[str] = field(default_factory=list)
    put_acks: list[float] = field(default_factory=list)        # monotonic time of each PutOk
    put_ok_after_kill_sent: float | None = None                 # first ack of a Put sent after the kill
    kill_at: float | None = None
    restarted_at: float | None = None
    election_at: float | None = None
    puts: Counter = field(default_factory=Counter)
    reads: Counter = field(default_factory=Counter)
    errors: dict[str, str] = field(default_factory=dict)       # code -> first message
    claimed: list[str] = field(default_factory=list)
    stop: bool = False

    def event(self, process: int, kind: str, f: str, key: str, value: str | None) -> None:
        shown = "nil" if value is None else '"' + value + '"'
        self.lines.append(f"{{:process {process}, :type :{kind}, :f :{f}, :key \"{key}\", "
                          f":value {shown}}}")


class Writer:
    def __init__(self, run: Run, index: int, servers: list[tuple[str, int]], names: int,
                 fresh: list[int]) -> None:
        self.run, self.index, self.servers = run, index, servers
        self.names = [f"w{index}-n{j}" for j in range(names)]
        self.token = f"bench-failover-{index}-{random.getrandbits(48):x}"
        self.process = index
        self.server = index % len(servers)
        self.counter = 0
        self._fresh = fresh

    async def put(self, client: AsyncJsonClient, name: str) -> tuple[str, AsyncJsonClient]:
        """One Put of the next address; its outcome kind (ok, fail, info)."""
        run = self.run
        self.counter += 1
        c = self.counter
        assert c < 65536
        address = f"10.{self.index}.{c >> 8}.{c & 255}"
        sent = time.monotonic()
        run.event(self.process, "invoke", "put", name, address)
        reply = await client.call({"Type": "Put", "Key": name, "Value": address,
                                   "Token": self.token, "Seq": c}, PUT_TIMEOUT_S)
        done = time.monotonic()
        if reply is not None and reply.get("Type") == "PutOk":
            run.event(self.process, "ok", "put", name, address)
            run.put_acks.append(done)
            if (run.kill_at is not None and sent > run.kill_at
                    and run.put_ok_after_kill_sent is None):
                run.put_ok_after_kill_sent = done
            run.puts["ok"] += 1
            return "ok", client
        code = "no answer" if reply is None else str(reply.get("Code"))
        if reply is not None:
            run.errors.setdefault(code, str(reply.get("Error"))[:200])
        if code in DEFINITE_REFUSALS:
            run.event(self.process, "fail", "put", name, address)
            run.puts["fail " + code] += 1
            return "fail", client
        run.event(self.process, "info", "put", name, address)
        run.puts["info " + code] += 1
        # Jepsen's rule: a process whose operation is in doubt is gone; go on as a new one,
        # through the next front end.
        self.process = self._fresh[0]
        self._fresh[0] += 1
        client.close()
        self.server = (self.server + 1) % len(self.servers)
        return "info", await AsyncJsonClient(self.servers[self.server]).open()

    async def claim(self) -> None:
        client = await AsyncJsonClient(self.servers[self.server]).open()
        try:
            for name in self.names:
                outcome, client = await self.put(client, name)
                if outcome != "ok":
                    raise RuntimeError(f"the claim of {name} was not acknowledged ({outcome}, "
                                       f"{self.run.errors})")
                self.run.claimed.append(name)
        finally:
            client.close()

    async def loop(self) -> None:
        client = await AsyncJsonClient(self.servers[self.server]).open()
        try:
            i = 0
            while not self.run.stop:
                _, client = await self.put(client, self.names[i % len(self.names)])
                i += 1
        finally:
            client.close()


class _DnsProtocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.waiter: asyncio.Future[bytes] | None = None
        self.qid = -1

    def datagram_received(self, data: bytes, addr: object) -> None:
        if (self.waiter is not None and not self.waiter.done() and len(data) >= 2
                and int.from_bytes(data[:2], "big") == self.qid):
            self.waiter.set_result(data)

    def error_received(self, exc: Exception) -> None:
        pass


async def reader(run: Run, index: int, servers: list[tuple[str, int]]) -> None:
    """DNS A queries for claimed names, front end ``index`` mod 3, one at a time."""
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        _DnsProtocol, remote_addr=servers[index % len(servers)])
    process = 100 + index
    rng = random.Random(index)
    try:
        while not run.stop:
            name = rng.choice(run.claimed)
            query = dnslib.DNSRecord.question(f"{name}.{ZONE}", "A")
            proto.qid = query.header.id
            proto.waiter = loop.create_future()
            run.event(process, "invoke", "get", name, None)
            transport.sendto(query.pack())
            try:
                data = await asyncio.wait_for(proto.waiter, DNS_TIMEOUT_S)
            except asyncio.TimeoutError:
                run.event(process, "fail", "get", name, None)
                run.reads["timeout"] += 1
                continue
            reply = dnslib.DNSRecord.parse(data)
            rcode = reply.header.rcode
            if rcode == dnslib.RCODE.NXDOMAIN:
                value = ""
            elif rcode == dnslib.RCODE.NOERROR:
                found = sorted(str(rr.rdata) for rr in reply.rr if rr.rtype == dnslib.QTYPE.A)
                value = ",".join(found) if found else "<NOERROR without A>"
            else:
                run.event(process, "fail", "get", name, None)
                run.reads[dnslib.RCODE.get(rcode)] += 1
                continue
            run.event(process, "ok", "get", name, value)
            run.reads["NXDOMAIN" if value == "" else "NOERROR"] += 1
    finally:
        transport.close()


def watch_election(cluster: EtcdCluster, killed: Member, ids: dict[str, str], run: Run,
                   deadline: float) -> None:
    """In a thread: set ``run.election_at`` once a surviving member names a
    surviving member as leader."""
    survivors = [m for m in cluster.members if m is not killed]
    alive = {ids[m.name] for m in survivors}
    while time.monotonic() < deadline:
        for member in survivors:
            status = cluster.status(member)
            if status is not None and status.get("leader") in alive:
                run.election_at = time.monotonic()
                return
        time.sleep(ELECTION_POLL_S)


async def scenario(run: Run, cluster: EtcdCluster, servers: list[tuple[str, int]],
                   args: argparse.Namespace) -> dict[str, Any]:
    fresh = [1000]
    writers = [Writer(run, w, servers, args.names, fresh) for w in range(args.writers)]
    await asyncio.gather(*(w.claim() for w in writers))
    run.t0 = time.monotonic()
    tasks = [asyncio.ensure_future(w.loop()) for w in writers]
    tasks += [asyncio.ensure_future(reader(run, r, servers)) for r in range(args.readers)]
    info: dict[str, Any] = {}
    try:
        await asyncio.sleep(args.kill_at)
        leader = await asyncio.to_thread(cluster.leader)
        if leader is None:
            raise RuntimeError("no etcd leader to kill")
        ids = {m.name: (await asyncio.to_thread(cluster.status, m) or {}).get(
            "header", {}).get("member_id") for m in cluster.members}
        term = _term(await asyncio.to_thread(cluster.status, leader))
        run.kill_at = time.monotonic()
        await asyncio.to_thread(cluster.kill_member, leader)
        watcher = threading.Thread(target=watch_election, daemon=True,
                                   args=(cluster, leader, ids, run, run.kill_at + args.down))
        watcher.start()
        await asyncio.sleep(max(0.0, run.kill_at + args.down - time.monotonic()))
        await asyncio.to_thread(watcher.join, 5)
        await asyncio.to_thread(cluster.restart_member, leader)
        run.restarted_at = time.monotonic()
        new_leader = await asyncio.to_thread(cluster.leader)
        new_term = _term(await asyncio.to_thread(cluster.status, new_leader)
                         if new_leader else None)
        info = {"killed": leader, "new_leader": new_leader, "term": term, "new_term": new_term}
        await asyncio.sleep(args.after)
    finally:
        run.stop = True
        await asyncio.wait(tasks, timeout=max(PUT_TIMEOUT_S, DNS_TIMEOUT_S) + 2)
        for task in tasks:
            task.cancel()
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
    return info


def _term(status: dict[str, Any] | None) -> str | None:
    return (status or {}).get("header", {}).get("raft_term")


def gaps(run: Run) -> dict[str, float | None]:
    """The update-gap figures, in seconds."""
    acks = sorted(run.put_acks)
    kill = run.kill_at
    assert kill is not None
    before = [t for t in acks if t <= kill]
    after = [t for t in acks if t > kill]
    # The interval containing the kill counts, then every interval from the kill on.
    window = ([before[-1]] if before else []) + after
    longest = max((b - a for a, b in zip(window, window[1:])), default=None)
    base = [t for t in acks if run.t0 <= t <= kill]
    longest_before = max((b - a for a, b in zip(base, base[1:])), default=None)
    return {"longest_gap": longest,
            "longest_gap_before_kill": longest_before,
            "kill_to_first_ack": after[0] - kill if after else None,
            "kill_to_first_ack_sent_after": (run.put_ok_after_kill_sent - kill
                                             if run.put_ok_after_kill_sent else None),
            "election": run.election_at - kill if run.election_at else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--names", type=int, default=3, help="names per writer")
    parser.add_argument("--readers", type=int, default=6)
    parser.add_argument("--kill-at", type=float, default=3.0)
    parser.add_argument("--down", type=float, default=5.0)
    parser.add_argument("--after", type=float, default=2.0)
    parser.add_argument("--keep", action="store_true", help="keep etcd's data folders")
    args = parser.parse_args()
    if etcd_binary() is None:
        print("etcd is not installed: apt-get install etcd-server", file=sys.stderr)
        return 2
    replay = " ".join([".venv/bin/python", "bench/bench_etcd_failover.py", *sys.argv[1:]])
    folder = Path(tempfile.mkdtemp(prefix="mydns-etcd-failover-"))
    run = Run()
    started = time.monotonic()
    with EtcdCluster(folder / "etcd", MACHINES,
                     client_port=free_port_range(2, 30000, MACHINES)) as cluster:
        lab = LabProcess(folder / "lab", "--store", "etcd", "--etcd-endpoints", cluster.endpoints,
                         "--http-port", "0", "--dns-reads", "linearizable", nclerks=3)
        print(f"etcd: {cluster.endpoints} (logs in {folder / 'etcd'})")
        print(f"lab:  python -m {lab.replay}")
        with lab:
            print(f"ready after {time.monotonic() - started:.1f} s")
            info = asyncio.run(scenario(run, cluster, lab.servers(), args))
    history = folder / "history.edn"
    history.write_text("\n".join(run.lines) + "\n")
    figures = gaps(run)
    check = [sys.executable, "-m", "mydns_lab.linearizability", str(history), "--format",
             "porcupine-kv", "--timeout", str(CHECK_TIMEOUT_S),
             "--html", str(folder / "timeline.html")]
    t = time.monotonic()
    verdict = subprocess.run(check, cwd=REPO, capture_output=True, text=True,
                             timeout=CHECK_TIMEOUT_S + 60)
    check_s = time.monotonic() - t

    def fmt(x: float | None) -> str:
        return "n/a" if x is None else f"{x * 1000:.0f} ms"

    def ratio(x: float | None) -> str:
        e = figures["election"]
        return "n/a" if x is None or not e else f"{x / e:.2f}"

    killed, new = info["killed"], info["new_leader"]
    print(f"killed leader {killed.name} ({killed.host}) at t={run.kill_at - run.t0:.2f} s "
          f"(raft term {info['term']}); restarted it {run.restarted_at - run.kill_at:.2f} s later; "
          f"leader after: {new.name if new else None} (term {info['new_term']})")
    print(f"puts: {dict(run.puts)}")
    print(f"reads: {dict(run.reads)}")
    if run.errors:
        print(f"put errors (first message per code): {run.errors}")
    print(f"history: {len(run.lines)} events, {len(run.claimed)} names -> {history}")
    print(f"etcd election (kill -> survivor names a live leader): {fmt(figures['election'])}")
    for key, label in (("longest_gap", "longest interval between acknowledged puts, from the kill on"),
                       ("kill_to_first_ack", "kill -> first acknowledged put"),
                       ("kill_to_first_ack_sent_after", "kill -> first ack of a put sent after it")):
        print(f"{label}: {fmt(figures[key])} (/election = {ratio(figures[key])})")
    print(f"longest interval between acknowledged puts before the kill: "
          f"{fmt(figures['longest_gap_before_kill'])}")
    print(f"checker ({check_s:.1f} s, exit {verdict.returncode}): {verdict.stdout.strip()}"
          + (f"\n{verdict.stderr.strip()}" if verdict.stderr.strip() else ""))
    print(f"replay:  {replay}")
    print(f"check:   .venv/bin/python -m mydns_lab.linearizability {history} --format porcupine-kv")
    if verdict.returncode == 0 and not args.keep:
        for member in ("m0", "m1", "m2"):
            shutil.rmtree(folder / "etcd" / member, ignore_errors=True)
    print(f"total {time.monotonic() - started:.1f} s; files in {folder}")
    return verdict.returncode


if __name__ == "__main__":
    sys.exit(main())
