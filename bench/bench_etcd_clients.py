"""Which etcd v3 client should the etcd store use: aetcd (asyncio over gRPC)
or etcd's JSON gRPC gateway spoken with aiohttp?

Starts a three-member etcd cluster on loopback (Debian's etcd, see
mydns_lab.experiments.etcdprocess), and for each client, interleaved over
``--rounds`` rounds (aetcd, gateway, aetcd, gateway, ...), measures:

  writes/s     conditional puts as the store will do them (a txn that compares
               the key's mod_revision with the one last written, then puts),
               64 in flight, ``--writes`` per round, over 64 keys;
  seq p50/p99  the same conditional put, one at a time (``--sequential``);
  watch p50/99 a watcher on a prefix, opened before; one write at a time to a
               key under it, latency from sending the put to the watcher
               holding the event (``--watch-events``).

Both clients talk to the same member, the leader, so a follower's forwarding
hop does not land on one client only. Every phase is bounded by a count and by
``--phase-timeout``. It prints each figure per client per round, the ratio
aetcd/gateway of the medians over rounds (writes/s: above 1 favours aetcd;
latencies: below 1 favours aetcd), and the versions measured.

    .venv/bin/pip install aetcd        # not a project dependency
    .venv/bin/python bench/bench_etcd_clients.py [--rounds 3] [--writes 3000]
        [--sequential 300] [--watch-events 300] [--phase-timeout 60]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib.metadata
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, AsyncIterator, Protocol

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mydns_lab.experiments.etcdprocess import EtcdCluster, Member
from mydns_lab.experiments.labprocess import free_port_range

IN_FLIGHT = 64
WARMUP_WRITES = 200
EVENT_TIMEOUT_S = 5.0
RPC_TIMEOUT_S = 10


def prefix_end(prefix: bytes) -> bytes:
    """etcd's range_end for "every key starting with ``prefix``"."""
    end = bytearray(prefix)
    for i in reversed(range(len(end))):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[:i + 1])
    return b"\0"


class Client(Protocol):
    name: str

    async def cas_put(self, key: bytes, value: bytes, mod_revision: int) -> int | None:
        """Put when the key's mod_revision is ``mod_revision`` (0: absent);
        the key's new mod_revision, or None when the comparison failed."""

    async def put(self, key: bytes, value: bytes) -> None: ...

    def watch_prefix(self, prefix: bytes) -> AsyncIterator[bytes]:
        """Values of the put events under ``prefix``; the first item is
        b"" once the watch is established, so a caller can start writing."""

    async def close(self) -> None: ...


class AetcdClient:
    """aetcd 1.0 as the store would use it."""

    name = "aetcd"

    def __init__(self, aetcd: Any, member: Member) -> None:
        # aetcd takes one host:port (no list of endpoints, no fail-over).
        self._client = aetcd.Client(host=member.host, port=member.client_port,
                                    timeout=RPC_TIMEOUT_S)
        self._tx = self._client.transactions

    async def open(self) -> AetcdClient:
        await self._client.connect()
        return self

    async def cas_put(self, key: bytes, value: bytes, mod_revision: int) -> int | None:
        # failure=[] is needed: aetcd iterates None and raises TypeError.
        ok, responses = await self._client.transaction(
            compare=[self._tx.mod(key) == mod_revision],
            success=[self._tx.put(key, value)], failure=[])
        # aetcd drops the txn's header; the inner put's header holds the revision.
        return responses[0].response_put.header.revision if ok else None

    async def put(self, key: bytes, value: bytes) -> None:
        await self._client.put(key, value)

    async def watch_prefix(self, prefix: bytes) -> AsyncIterator[bytes]:
        watch = await self._client.watch_prefix(prefix)  # returns once created
        try:
            yield b""
            async for event in watch:
                yield event.kv.value
        finally:
            await watch.cancel()

    async def close(self) -> None:
        await self._client.close()


class GatewayClient:
    """etcd's JSON gRPC gateway over aiohttp: bytes travel base64, int64s as
    strings, and false/zero fields are left out of answers (proto3 JSON)."""

    name = "gateway"

    def __init__(self, member: Member) -> None:
        self._base = member.client_url + "/v3"  # etcd 3.4 serves /v3/ and /v3beta/
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> GatewayClient:
        # Room for every request in flight on its own keep-alive connection.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=2 * IN_FLIGHT),
            timeout=aiohttp.ClientTimeout(total=RPC_TIMEOUT_S))
        return self

    async def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        assert self._session is not None
        async with self._session.post(self._base + path, json=body) as answer:
            reply = await answer.json(content_type=None)
            if answer.status != 200:
                raise RuntimeError(f"{path}: HTTP {answer.status}: {reply}")
            return reply

    async def cas_put(self, key: bytes, value: bytes, mod_revision: int) -> int | None:
        reply = await self._call("/kv/txn", {
            "compare": [{"key": _b64(key), "target": "MOD", "result": "EQUAL",
                         "mod_revision": str(mod_revision)}],
            "success": [{"request_put": {"key": _b64(key), "value": _b64(value)}}]})
        # With one put, the txn's revision is the key's new mod_revision.
        return int(reply["header"]["revision"]) if reply.get("succeeded") else None

    async def put(self, key: bytes, value: bytes) -> None:
        await self._call("/kv/put", {"key": _b64(key), "value": _b64(value)})

    async def watch_prefix(self, prefix: bytes) -> AsyncIterator[bytes]:
        assert self._session is not None
        body = {"create_request": {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))}}
        # A watch is one long response: no total timeout on it.
        async with self._session.post(self._base + "/watch", json=body,
                                      timeout=aiohttp.ClientTimeout(total=None)) as stream:
            if stream.status != 200:
                raise RuntimeError(f"/watch: HTTP {stream.status}: {await stream.text()}")
            # One JSON object a line: {"result": {...}} (or {"error": ...}).
            async for line in stream.content:
                message = json.loads(line)
                if "error" in message:
                    raise RuntimeError(f"/watch: {message['error']}")
                result = message["result"]
                if result.get("created"):
                    yield b""
                for event in result.get("events", []):
                    yield base64.b64decode(event["kv"].get("value", ""))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def concurrent_writes(client: Client, prefix: bytes, writes: int,
                            timeout_s: float) -> dict[str, float]:
    """``writes`` conditional puts, IN_FLIGHT at a time, each task on its own
    key (so comparisons fail only if a put was lost or misread)."""
    keys = [prefix + b"%02d" % i for i in range(IN_FLIGHT)]
    revisions = [await client.cas_put(k, b"0", 0) for k in keys]  # create, not timed
    remaining = writes
    failed = 0
    deadline = time.monotonic() + timeout_s

    async def worker(i: int) -> None:
        nonlocal remaining, failed
        while remaining > 0 and time.monotonic() < deadline:
            remaining -= 1
            revision = await client.cas_put(keys[i], b"%d" % remaining, revisions[i])
            if revision is None:
                failed += 1
            else:
                revisions[i] = revision

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(IN_FLIGHT)))
    elapsed = time.perf_counter() - started
    done = writes - max(0, remaining)
    return {"writes_per_s": done / elapsed, "writes": done, "failed": failed}


async def sequential_writes(client: Client, prefix: bytes, count: int,
                            timeout_s: float) -> dict[str, float]:
    """The same conditional put, one at a time: the latency one uploader sees."""
    key = prefix + b"seq"
    revision = await client.cas_put(key, b"0", 0)
    latencies = []
    deadline = time.monotonic() + timeout_s
    while len(latencies) < count and time.monotonic() < deadline:
        started = time.perf_counter()
        revision = await client.cas_put(key, b"%d" % len(latencies), revision)
        latencies.append((time.perf_counter() - started) * 1000)
        if revision is None:
            raise RuntimeError(f"{client.name}: a sequential conditional put was refused")
    p50, p99 = p50_p99(latencies)
    return {"seq_p50_ms": p50, "seq_p99_ms": p99}


async def watch_latency(client: Client, prefix: bytes, count: int,
                        timeout_s: float) -> dict[str, float]:
    """Write one key, wait for the watcher's event, repeat ``count`` times."""
    arrivals: asyncio.Queue[tuple[bytes, float]] = asyncio.Queue()
    events = client.watch_prefix(prefix)

    async def watcher() -> None:
        async for value in events:
            arrivals.put_nowait((value, time.perf_counter()))

    task = asyncio.create_task(watcher())
    latencies: list[float] = []
    lost = 0
    try:
        value, _ = await asyncio.wait_for(arrivals.get(), RPC_TIMEOUT_S)  # established
        assert value == b""
        deadline = time.monotonic() + timeout_s
        for i in range(count):
            if time.monotonic() > deadline:
                break
            expected = b"%d" % i
            started = time.perf_counter()
            await client.put(prefix + b"key", expected)
            arrived = await _next_value(arrivals, expected, EVENT_TIMEOUT_S)
            if arrived is None:
                lost += 1
            else:
                latencies.append((arrived - started) * 1000)
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        await events.aclose()  # cancels the watch (aetcd) / closes the stream
    p50, p99 = p50_p99(latencies)
    return {"watch_p50_ms": p50, "watch_p99_ms": p99, "watch_events": len(latencies),
            "watch_lost": lost}


async def _next_value(arrivals: asyncio.Queue, expected: bytes,
                      timeout_s: float) -> float | None:
    """When the event carrying ``expected`` arrived, or None if it did not
    within ``timeout_s`` (earlier events, if any, are skipped)."""
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        try:
            value, arrived = await asyncio.wait_for(arrivals.get(), left)
        except asyncio.TimeoutError:
            return None
        if value == expected:
            return arrived
    return None


def p50_p99(samples: list[float]) -> tuple[float, float]:
    """Median and 99th percentile (nearest rank below), as in the lab's
    figures; NaN when there are none."""
    ordered = sorted(samples)
    if not ordered:
        return float("nan"), float("nan")
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def one_round(client: Client, tag: str, args: argparse.Namespace) -> dict[str, float]:
    # A fresh prefix per round and client: no measurement sees another's keys.
    prefix = f"/bench/{tag}/".encode()
    result = await concurrent_writes(client, prefix + b"w/", args.writes, args.phase_timeout)
    result |= await sequential_writes(client, prefix + b"s/", args.sequential,
                                      args.phase_timeout)
    result |= await watch_latency(client, prefix + b"watch/", args.watch_events,
                                  args.phase_timeout)
    return result


async def open_client(kind: str, aetcd: Any, member: Member) -> Client:
    if kind == "aetcd":
        return await AetcdClient(aetcd, member).open()
    return await GatewayClient(member).open()


async def run(aetcd: Any, member: Member, args: argparse.Namespace) -> dict[str, list[dict]]:
    results: dict[str, list[dict]] = {"aetcd": [], "gateway": []}
    for kind in results:  # warm both paths (etcd, channel, pools) before timing
        client = await open_client(kind, aetcd, member)
        try:
            await concurrent_writes(client, f"/bench/warmup-{kind}/".encode(), WARMUP_WRITES,
                                    args.phase_timeout)
        finally:
            await client.close()
    for round_ in range(1, args.rounds + 1):
        for kind in results:  # interleaved: a drift in etcd hits both clients
            client = await open_client(kind, aetcd, member)
            try:
                result = await one_round(client, f"{kind}-{round_}", args)
            finally:
                await client.close()
            results[kind].append(result)
            print(f"  round {round_} {kind:8} {_brief(result)}", flush=True)
    return results


FIGURES = [("writes_per_s", "cas writes/s (64 in flight)", "{:9.0f}"),
           ("seq_p50_ms", "sequential cas p50 ms", "{:9.2f}"),
           ("seq_p99_ms", "sequential cas p99 ms", "{:9.2f}"),
           ("watch_p50_ms", "watch p50 ms", "{:9.2f}"),
           ("watch_p99_ms", "watch p99 ms", "{:9.2f}")]


def _brief(result: dict[str, float]) -> str:
    return (f"{result['writes_per_s']:.0f} writes/s ({result['writes']:.0f}, "
            f"{result['failed']:.0f} refused), seq p50 {result['seq_p50_ms']:.2f} ms, "
            f"watch p50/p99 {result['watch_p50_ms']:.2f}/{result['watch_p99_ms']:.2f} ms "
            f"({result['watch_events']:.0f} events, {result['watch_lost']:.0f} lost)")


def print_table(results: dict[str, list[dict]]) -> None:
    rounds = len(results["aetcd"])
    header = "".join(f"{f'{k[:5]} r{r + 1}':>9}" for k in results for r in range(rounds))
    print(f"\n{'figure':28}{header}{'aetcd med':>10}{'gw med':>9}{'ratio a/g':>10}")
    for key, label, fmt in FIGURES:
        cells = "".join(fmt.format(r[key]) for k in results for r in results[k])
        a = statistics.median(r[key] for r in results["aetcd"])
        g = statistics.median(r[key] for r in results["gateway"])
        print(f"{label:28}{cells}{fmt.format(a):>10}{fmt.format(g):>9}{a / g:10.2f}")
    print("(ratio of medians over rounds; writes/s above 1 and latencies below 1 favour aetcd)")


def versions(cluster: EtcdCluster, member: Member) -> str:
    status = cluster.status(member) or {}
    packages = ", ".join(f"{p} {importlib.metadata.version(p)}"
                         for p in ("aetcd", "grpcio", "protobuf", "aiohttp"))
    return (f"etcd {status.get('version', '?')} (3 members), Python "
            f"{platform.python_version()}, {packages}")


def import_aetcd() -> Any:
    """aetcd, imported only here: it is not a project dependency."""
    try:
        import aetcd
    except ImportError:
        print("aetcd is not installed; to run this bench: .venv/bin/pip install aetcd",
              file=sys.stderr)
        sys.exit(2)
    return aetcd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--writes", type=int, default=3000,
                        help="conditional puts per round, 64 in flight")
    parser.add_argument("--sequential", type=int, default=300,
                        help="conditional puts one at a time per round")
    parser.add_argument("--watch-events", type=int, default=300)
    parser.add_argument("--phase-timeout", type=float, default=60,
                        help="seconds, bound on each measurement")
    args = parser.parse_args()
    aetcd = import_aetcd()
    with tempfile.TemporaryDirectory(prefix="mydns-bench-etcd-") as tmp:
        with EtcdCluster(Path(tmp), client_port=free_port_range(2)) as cluster:
            member = cluster.leader() or cluster.members[0]
            print(f"etcd cluster {cluster.endpoints}; both clients on {member.client_url} "
                  f"(leader: {cluster.leader() == member})", flush=True)
            print(versions(cluster, member), flush=True)
            started = time.monotonic()
            results = asyncio.run(run(aetcd, member, args))
            print_table(results)
            print(f"measured in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
