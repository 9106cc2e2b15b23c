"""The lab harness under load: throughput, latency, sequential puts and
fail-over, each beside its reference measured in the same run.

Starts the real service (3 servers and 3 front ends by default, fsync on,
reliable network) on loopback with a fresh data folder, drives it with the
JSON protocol from this process (throughput: the lean loop of putload.py;
the other modes: asyncio or blocking UDP clients), and prints what it
measured. This machine's speed drifts by more than 2x over a day, so where
issue 15 names a reference, the same run also starts a three-member etcd
(Debian's etcd-server, on the same disk; bench/etcdref.py) and measures it
interleaved with the lab, ``--rounds`` times, printing the ratio:

  throughput  acked puts/s, --clients in flight  vs  etcdctl check perf --load l
  sequential  put p50, one at a time             vs  etcd's gateway, one at a time
              (both from a blocking client on one kept connection)
  latency     p50/p99 at --rate puts/s           (target: p99 < 20 ms)
  failover    SIGKILL of the leader -> first acknowledged put

    .venv/bin/python bench/bench_lab.py throughput [--clients 64] [--seconds 10]
    .venv/bin/python bench/bench_lab.py sequential [--count 2000]
    .venv/bin/python bench/bench_lab.py latency    [--rate 200] [--seconds 10]
    .venv/bin/python bench/bench_lab.py failover   [--trials 20]
    .venv/bin/python bench/bench_lab.py all        [--rounds 3] [--no-reference]

Targets (issue 15, 3 servers and 3 front ends): throughput >= 1.5x etcd's
check perf --load l; sequential p50 <= etcd's; p99 < 20 ms at 200 puts/s.
(Issue 4, 5 servers: --nservers 5 --nclerks 5; fail-over median < 0.6 s,
worst of 20 < 1.5 s.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from etcdref import check_perf, sequential_puts_ms, versions  # noqa: E402  (a sibling script)
from putload import CLAIM_WITHIN_S, PutLoad  # noqa: E402  (a sibling script)

from mydns_lab.clients.jsonclient import AsyncJsonClient, JsonConnection, NoAnswer  # noqa: E402
from mydns_lab.experiments.etcdprocess import EtcdCluster, etcd_binary  # noqa: E402
from mydns_lab.experiments.labprocess import LabProcess, free_port_range, wait_for  # noqa: E402
from mydns_lab.lab.state import p50_p99  # noqa: E402


class Uploader:
    """One client: owns one name, uploads a new address each time."""

    def __init__(self, name: str, server: tuple[str, int]) -> None:
        self.name = name
        self.conn = AsyncJsonClient(server)
        self.token = ""
        self.seq = 0

    async def open(self) -> None:
        await self.conn.open()

    async def put(self, timeout_s: float) -> bool:
        """One upload; True when acknowledged (PutOk)."""
        self.seq += 1
        address = f"10.{(self.seq >> 16) & 255}.{(self.seq >> 8) & 255}.{self.seq & 255}"
        request = {"Type": "Put", "Key": self.name, "Value": address, "Seq": self.seq}
        if self.token:
            request["Token"] = self.token
        reply = await self.conn.call(request, timeout_s)
        if reply is None or reply.get("Type") != "PutOk":
            return False
        self.token = self.token or reply.get("Token", "")
        return True


async def _uploaders(lab: LabProcess, count: int) -> list[Uploader]:
    servers = lab.servers()
    uploaders = [Uploader(f"bench-{os.getpid()}-{i}", servers[i % len(servers)])
                 for i in range(count)]
    for u in uploaders:
        await u.open()
        give_up = time.monotonic() + CLAIM_WITHIN_S
        while not await u.put(2.0):  # claim the name
            if time.monotonic() > give_up:
                raise SystemExit(f"could not claim {u.name} within {CLAIM_WITHIN_S:g} s")
    return uploaders


def throughput(lab: LabProcess, clients: int, seconds: float) -> dict:
    """``clients`` uploaders, one put in flight each, spread over the front
    ends, for ``seconds``, driven by the lean loop of :mod:`putload`."""
    load = PutLoad(lab.servers(), clients)
    try:
        load.claim()
        result = load.run(seconds)
    finally:
        load.close()
    return {"clients": clients, "acked_puts": result.acked, "refused": result.refused,
            "timed_out": result.timed_out, "seconds": round(result.seconds, 2),
            "acked_puts_per_s": round(result.acked / result.seconds),
            **_percentiles(result.latencies_ms)}


async def latency(lab: LabProcess, rate: float, seconds: float) -> dict:
    uploaders = await _uploaders(lab, 8)
    latencies: list[float] = []
    failed = 0
    interval = 1 / rate
    next_at = time.monotonic()
    end = next_at + seconds
    tasks = []

    async def one(u: Uploader) -> None:
        nonlocal failed
        t = time.monotonic()
        if await u.put(2.0):
            latencies.append((time.monotonic() - t) * 1000)
        else:
            failed += 1

    i = 0
    busy: set[int] = set()
    while next_at < end:
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))  # pacing the offered load
        u = uploaders[i % len(uploaders)]
        i += 1
        next_at += interval
        if id(u) in busy:
            continue
        busy.add(id(u))
        task = asyncio.ensure_future(one(u))
        task.add_done_callback(lambda _t, key=id(u): busy.discard(key))
        tasks.append(task)
    await asyncio.gather(*tasks)
    return {"offered_puts_per_s": rate, "acked": len(latencies), "failed": failed,
            **_percentiles(latencies)}


async def failover(lab: LabProcess, trials: int) -> dict:
    [u] = await _uploaders(lab, 1)
    results: list[float] = []
    status_path = lab.data_dir / "status.json"
    for trial in range(trials):
        def leader_known() -> bool:
            status = json.loads(status_path.read_text()) if status_path.exists() else {}
            servers = status.get("servers", {})
            return (sum(1 for s in servers.values() if s["role"] in ("leader", "follower"))
                    == len(servers) and any(s["role"] == "leader" for s in servers.values()))
        wait_for(leader_known, 30, "a leader and every server up")
        while not await u.put(1.0):  # the cluster is serving
            pass
        status = json.loads(status_path.read_text())
        leader_pid = next(s["pid"] for s in status["servers"].values() if s["role"] == "leader")
        killed = time.monotonic()
        os.kill(leader_pid, signal.SIGKILL)
        while not await u.put(0.1):
            pass
        results.append(time.monotonic() - killed)
        print(f"  trial {trial + 1}: first acknowledged put {results[-1] * 1000:.0f} ms "
              f"after SIGKILL of the leader", flush=True)
    return {"trials": trials, "median_s": round(statistics.median(results), 3),
            "worst_s": round(max(results), 3), "best_s": round(min(results), 3)}


def _percentiles(values: list[float]) -> dict:
    if not values:
        return {"p50_ms": None, "p99_ms": None}
    p50, p99 = p50_p99(values)
    return {"p50_ms": round(p50, 2), "p99_ms": round(p99, 2)}


def sequential(lab: LabProcess, count: int) -> dict:
    """``count`` puts of one name, one at a time, through front end 0, on
    one kept connection with a blocking client: the way the reference is
    measured (etcdref.sequential_puts_ms), so the two figures carry the
    same client overhead."""
    name = f"bench-{os.getpid()}-seq"
    latencies = []
    failed = 0
    with JsonConnection(lab.servers()[0]) as conn:
        reply = conn.call({"Type": "Put", "Key": name, "Value": "10.0.0.1", "Seq": 1}, 2.0)
        if reply.get("Type") != "PutOk":
            raise SystemExit(f"could not claim {name}: {reply}")
        owner = {"Token": reply["Token"]} if reply.get("Token") else {}  # none: an open name
        for seq in range(2, count + 2):
            request = {"Type": "Put", "Key": name, "Value": f"10.0.{(seq >> 8) & 255}.{seq & 255}",
                       "Seq": seq, **owner}
            started = time.perf_counter()
            try:
                ok = conn.call(request, 2.0).get("Type") == "PutOk"
            except NoAnswer:
                ok = False
            if ok:
                latencies.append((time.perf_counter() - started) * 1000)
            else:
                failed += 1
    return {"puts": count, "failed": failed, **_percentiles(latencies)}


REFERENCED = {"throughput": "etcdctl check perf --load l",
              "sequential": "etcd gateway, sequential puts"}
"""The modes with a reference in the same run, and what it is."""


def reference(mode: str, cluster: EtcdCluster, count: int) -> dict:
    """The reference figure of ``mode`` measured on ``cluster`` now."""
    if mode == "throughput":
        result = check_perf(cluster.endpoints, "l")
        return {"acked_puts_per_s": result["writes_per_s"], "verdict": result["verdict"],
                "lines": result["lines"], "errors": result["errors"][:3]}
    leader = cluster.leader() or cluster.members[0]
    samples = sequential_puts_ms(leader.client_url, count)
    return {"puts": count, **_percentiles(samples)}


def ratio_of(mode: str, ours: dict, theirs: dict) -> float | None:
    """Ours over the reference, oriented so that above 1 means we do better."""
    if mode == "throughput":
        a, b = ours.get("acked_puts_per_s"), theirs.get("acked_puts_per_s")
        return a / b if a and b else None
    a, b = ours.get("p50_ms"), theirs.get("p50_ms")
    return b / a if a and b else None


def run_ours(mode: str, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="mydns-bench-") as tmp:
        flags = ["--fresh"] + (["--no-fsync"] if args.no_fsync else [])
        lab = LabProcess(Path(tmp) / "data", *flags, nservers=args.nservers,
                         nclerks=args.nclerks, seed=11)
        with lab:
            if mode == "throughput":
                return throughput(lab, args.clients, args.seconds)
            if mode == "latency":
                return asyncio.run(latency(lab, args.rate, args.seconds))
            if mode == "sequential":
                return sequential(lab, args.count)
            return asyncio.run(failover(lab, args.trials))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["throughput", "sequential", "latency", "failover",
                                         "all"])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--count", type=int, default=2000, help="sequential puts per run")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=1,
                        help="runs of each mode, each followed by its reference")
    parser.add_argument("--nservers", type=int, default=3)
    parser.add_argument("--nclerks", type=int, default=3)
    parser.add_argument("--no-fsync", action="store_true", help="for comparison only")
    parser.add_argument("--no-reference", action="store_true",
                        help="do not start etcd: the lab's figures alone")
    args = parser.parse_args()
    modes = (["throughput", "sequential", "latency", "failover"] if args.mode == "all"
             else [args.mode])
    for line in versions():
        print(line, flush=True)
    print(f"lab: {args.nservers} servers, {args.nclerks} front ends, "
          f"fsync {'off' if args.no_fsync else 'on'}", flush=True)
    wants_reference = not args.no_reference and any(m in REFERENCED for m in modes)
    if wants_reference and (etcd_binary() is None or shutil.which("etcdctl") is None):
        print("no reference: etcd and etcdctl are not installed (apt-get install etcd-server "
              "etcd-client); the lab's figures alone", flush=True)
        wants_reference = False
    ratios: dict[str, list[float]] = {m: [] for m in modes if m in REFERENCED}
    with contextlib.ExitStack() as stack:
        cluster = None
        if wants_reference:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mydns-ref-")))
            cluster = stack.enter_context(EtcdCluster(folder, client_port=free_port_range(2)))
            print(f"reference: etcd members {cluster.endpoints} (data under {folder})",
                  flush=True)
        for r in range(1, args.rounds + 1):
            for mode in modes:
                ours = run_ours(mode, args)
                print(f"round {r} {mode}: {json.dumps(ours)}", flush=True)
                if cluster is None or mode not in REFERENCED:
                    continue
                theirs = reference(mode, cluster, args.count)
                print(f"round {r} {mode} reference ({REFERENCED[mode]}): {json.dumps(theirs)}",
                      flush=True)
                if (value := ratio_of(mode, ours, theirs)) is not None:
                    ratios[mode].append(value)
                    print(f"round {r} {mode} ratio (above 1: the lab does better): "
                          f"{value:.2f}", flush=True)
    for mode, values in ratios.items():
        if values:
            print(f"{mode}: the lab / {REFERENCED[mode]} = {statistics.median(values):.2f} "
                  f"(median of {len(values)}: {', '.join(f'{v:.2f}' for v in values)})")


if __name__ == "__main__":
    main()
