"""The two stores side by side: acknowledged puts/s through three front
ends on the embedded Raft store and on etcd, and etcd's own
``etcdctl check perf`` on the same etcd cluster, in one run.

Starts a three-member etcd cluster on loopback (Debian's etcd on 127.0.0.2,
.3, .4, see mydns_lab.experiments.etcdprocess) and, interleaved over
``--rounds`` rounds (raft, etcd, check perf, raft, etcd, ...):

  raft        the lab with the embedded store: 3 Raft servers, fsync on,
              3 front ends, a fresh data folder;
  etcd        the lab with ``--store etcd`` against that cluster: 3 front
              ends, no Raft servers, a fresh key prefix per round;
  check perf  ``etcdctl check perf --load s`` on that cluster (~60 s; also
              ``--load l`` with ``--load-l``).

The lab load is bench_lab.py's: ``--clients`` JSON clients, each owning one
name (claimed first, so the load is updates with Token and Seq) and keeping
one put in flight, spread over the 3 front ends, for ``--seconds``. It
prints each round as it goes, then a table of medians over rounds with the
ratios etcd-store/raft-store and each store / check perf's writes/s.

check perf is a pass/fail test against a fixed offered rate (s: 150
writes/s from 50 clients; l: 8,000 from 1,000), not a maximum: its
writes/s is at most that rate, so a store / check perf ratio says how far
the store is above the rate etcd calls enough for that load.

    .venv/bin/python bench/bench_stores.py [--rounds 1] [--clients 64]
        [--seconds 10] [--load-l]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_lab import Uploader  # noqa: E402  (sibling scripts, not a package)
from etcdref import check_perf, versions  # noqa: E402

from mydns_lab.experiments.etcdprocess import EtcdCluster, etcd_binary  # noqa: E402
from mydns_lab.experiments.labprocess import LabProcess, free_port_range  # noqa: E402
from mydns_lab.lab.state import p50_p99  # noqa: E402

FRONT_ENDS = 3
PUT_TIMEOUT_S = 2.0
CLAIM_TIMEOUT_S = 30.0        # every client's first put (claiming its name), in all


class CountingUploader(Uploader):
    """bench_lab's Uploader, remembering why a put was not acknowledged."""

    def __init__(self, name: str, server: tuple[str, int]) -> None:
        super().__init__(name, server)
        self.timeouts = 0
        self.refusals: dict[str, int] = {}
        self.last_reply: dict[str, Any] | None = None
        call = self.conn.call

        async def recording(request: dict[str, Any], timeout_s: float) -> dict[str, Any] | None:
            self.last_reply = await call(request, timeout_s)
            return self.last_reply

        self.conn.call = recording  # type: ignore[method-assign]

    async def put(self, timeout_s: float) -> bool:
        self.last_reply = None
        if await super().put(timeout_s):
            return True
        if self.last_reply is None:
            self.timeouts += 1
        else:
            kind = " ".join(str(self.last_reply.get(k)) for k in ("Type", "Code", "Error")
                            if self.last_reply.get(k))
            self.refusals[kind] = self.refusals.get(kind, 0) + 1
        return False


async def throughput(lab: LabProcess, label: str, clients: int, seconds: float) -> dict:
    servers = lab.servers()
    uploaders = [CountingUploader(f"bench-{os.getpid()}-{label}-{i}", servers[i % len(servers)])
                 for i in range(clients)]
    claim_deadline = time.monotonic() + CLAIM_TIMEOUT_S
    for u in uploaders:
        await u.open()
        while not await u.put(PUT_TIMEOUT_S):  # claim the name
            if time.monotonic() > claim_deadline:
                raise AssertionError(f"{label}: could not claim {u.name} within "
                                     f"{CLAIM_TIMEOUT_S:g} s ({u.refusals}, {u.timeouts} timeouts)")
    for u in uploaders:
        u.timeouts, u.refusals = 0, {}
    acked = 0
    latencies: list[float] = []
    end = time.monotonic() + seconds

    async def run(u: CountingUploader) -> None:
        nonlocal acked
        while time.monotonic() < end:
            t = time.monotonic()
            if await u.put(PUT_TIMEOUT_S):
                acked += 1
                latencies.append((time.monotonic() - t) * 1000)

    cpu = time.process_time()
    started = time.monotonic()
    await asyncio.gather(*(run(u) for u in uploaders))
    elapsed = time.monotonic() - started
    cpu = time.process_time() - cpu
    for u in uploaders:
        u.conn.close()
    refusals: dict[str, int] = {}
    for u in uploaders:
        for kind, n in u.refusals.items():
            refusals[kind] = refusals.get(kind, 0) + n
    p50, p99 = p50_p99(latencies)
    return {"puts_per_s": acked / elapsed, "acked": acked, "seconds": elapsed,
            "p50_ms": p50, "p99_ms": p99, "timeouts": sum(u.timeouts for u in uploaders),
            "refused": refusals, "client_cpu": cpu / elapsed}


def run_lab(tmp: Path, label: str, flags: list[str], nservers: int, clients: int,
            seconds: float) -> dict:
    lab = LabProcess(tmp / label / "data", "--fresh", *flags, nservers=nservers,
                     nclerks=FRONT_ENDS, seed=11)
    try:
        started = time.monotonic()
        with lab:
            ready_s = time.monotonic() - started
            result = asyncio.run(throughput(lab, label, clients, seconds))
    finally:
        shutil.rmtree(tmp / label, ignore_errors=True)
    result["ready_s"] = ready_s
    return result


def median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value: float | None, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or not b else f"{a / b:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--load-l", action="store_true",
                        help="also run `check perf --load l` each round (another ~60 s)")
    args = parser.parse_args()
    if etcd_binary() is None or shutil.which("etcdctl") is None:
        sys.exit("etcd and etcdctl are needed: apt-get install etcd-server etcd-client")
    for line in versions():
        print(line, flush=True)
    loads = ["s"] + (["l"] if args.load_l else [])
    labs: dict[str, list[dict]] = {"raft": [], "etcd": []}
    perf: dict[str, list[dict]] = {load: [] for load in loads}
    with tempfile.TemporaryDirectory(prefix="mydns-bench-stores-") as tmp_name:
        tmp = Path(tmp_name)
        with EtcdCluster(tmp / "etcd", client_port=free_port_range(2)) as cluster:
            print(f"etcd cluster: {cluster.endpoints}; {FRONT_ENDS} front ends, "
                  f"{args.clients} clients, {args.seconds:g} s per lab run", flush=True)
            for r in range(1, args.rounds + 1):
                raft = run_lab(tmp, f"raft-r{r}", [], 3, args.clients, args.seconds)
                labs["raft"].append(raft)
                report(r, "raft", raft)
                etcd = run_lab(tmp, f"etcd-r{r}",
                               ["--store", "etcd", "--etcd-endpoints", cluster.endpoints,
                                "--etcd-prefix", f"/mydns-bench-r{r}/"],
                               3, args.clients, args.seconds)
                labs["etcd"].append(etcd)
                report(r, "etcd", etcd)
                for load in loads:
                    result = check_perf(cluster.endpoints, load)
                    perf[load].append(result)
                    print(f"round {r} check perf --load {load}: {result['verdict']} "
                          f"{fmt(result['writes_per_s'])} writes/s in "
                          f"{result['seconds']:.0f} s (exit {result['exit']}); "
                          f"{' | '.join(result['lines'])}", flush=True)
                    for line in result.get("errors", [])[:5]:
                        print(f"    etcdctl: {line}", flush=True)
    summary(labs, perf, args.rounds)


def report(r: int, store: str, result: dict) -> None:
    refused = sum(result["refused"].values())
    print(f"round {r} {store:4s}: {result['puts_per_s']:,.0f} acked puts/s "
          f"({result['acked']} in {result['seconds']:.1f} s), p50 {result['p50_ms']:.2f} ms, "
          f"p99 {result['p99_ms']:.2f} ms, timeouts {result['timeouts']}, refused {refused}"
          f"{' ' + str(result['refused']) if refused else ''}, "
          f"client CPU {result['client_cpu']:.0%}, ready in {result['ready_s']:.1f} s",
          flush=True)


def summary(labs: dict[str, list[dict]], perf: dict[str, list[dict]], rounds: int) -> None:
    perf_writes = {load: median([p["writes_per_s"] for p in results])
                   for load, results in perf.items()}
    puts = {store: median([r["puts_per_s"] for r in results]) for store, results in labs.items()}
    head = f"{'store':6s} {'puts/s':>8s} {'p50 ms':>7s} {'p99 ms':>7s} {'timeouts':>8s} " \
           f"{'refused':>7s}" + "".join(f" {'/perf ' + load:>8s}" for load in perf)
    print(f"\nmedians over {rounds} round(s), {FRONT_ENDS} front ends each:")
    print(head)
    for store, results in labs.items():
        print(f"{store:6s} {fmt(puts[store]):>8s} "
              f"{fmt(median([r['p50_ms'] for r in results]), '.2f'):>7s} "
              f"{fmt(median([r['p99_ms'] for r in results]), '.2f'):>7s} "
              f"{sum(r['timeouts'] for r in results):>8d} "
              f"{sum(sum(r['refused'].values()) for r in results):>7d}"
              + "".join(f" {ratio(puts[store], w):>8s}" for w in perf_writes.values()))
    for load, results in perf.items():
        verdicts = ",".join(p["verdict"] for p in results)
        print(f"etcdctl check perf --load {load}: {fmt(perf_writes[load])} writes/s "
              f"({verdicts})")
    print(f"etcd-store / raft-store puts/s: {ratio(puts['etcd'], puts['raft'])}")


if __name__ == "__main__":
    main()
