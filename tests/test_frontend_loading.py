"""A front end never answers DNS from a copy of the records it has not
finished loading: before the first watch answer it says SERVFAIL (so a
resolver tries another server and caches nothing for long), never NXDOMAIN
for a name that exists. A large store loads in pages beside the copy DNS
answers from, swapped in whole; meanwhile a query for a stored name is read
through the cluster, and any other still gets SERVFAIL.
No lab: the cluster is a stand-in.
"""

from __future__ import annotations

import asyncio
import time

import dns.message
import dns.rcode
import pytest

from mydns_lab.clerks import Finished
from mydns_lab.net.recordcopy import RecordCache, load_full_listing
from mydns_lab.protocol import Record, RecordOp
from mydns_lab.service.dnsfront import LOADING_HEARD_S, LOADING_READS, DnsService
from mydns_lab.service.settings import FrontEndCounters, FrontEndSettings

OWNER = "0" * 64


class SilentCluster:
    """A ClusterClient stand-in for a cluster that never answers."""

    async def call(self, op: RecordOp, timeout_s: float) -> Finished:
        raise AssertionError("cache mode answers without the cluster")


def service(cache: RecordCache) -> DnsService:
    return DnsService(SilentCluster(), FrontEndSettings(servers=(1,)), cache,  # type: ignore[arg-type]
                      FrontEndCounters())


def rcode_of(reply_data: bytes | None) -> int:
    assert reply_data is not None
    return dns.message.from_wire(reply_data).rcode()


def query(name: str) -> bytes:
    return dns.message.make_query(name, "A").to_wire()


@pytest.mark.parametrize("path", ["now", "awaited"])
def test_servfail_until_the_first_copy_loads(path: str) -> None:
    cache = RecordCache()
    front = service(cache)

    def ask(name: str) -> int:
        if path == "now":
            reply = front.answer_now(query(name))
            return rcode_of(reply.data)  # type: ignore[union-attr]
        return rcode_of(asyncio.run(front.answer(query(name), tcp=False)))

    assert ask("laptop.mydns.") == dns.rcode.SERVFAIL
    assert ask("nobody.mydns.") == dns.rcode.SERVFAIL
    cache.apply((Record("laptop", ("192.0.2.1",), owner=OWNER),), serial=1, full=True)
    assert ask("laptop.mydns.") == dns.rcode.NOERROR
    assert ask("nobody.mydns.") == dns.rcode.NXDOMAIN


def test_an_empty_store_is_loaded_once_the_leader_says_so() -> None:
    """The first answer may be empty (nothing stored): then NXDOMAIN is true."""
    cache = RecordCache()
    cache.apply((), serial=0, full=False)
    assert rcode_of(service(cache).answer_now(query("x.mydns.")).data) == dns.rcode.NXDOMAIN  # type: ignore[union-attr]


class PagedCluster:
    """A ClusterClient stand-in whose store holds ``count`` records and
    answers a full listing in pages of ``page``, as the leader does."""

    def __init__(self, count: int, page: int) -> None:
        self.names = sorted(f"h{i}" for i in range(count))
        self.page = page
        self.asked: list[RecordOp] = []
        self.seen_during_load: list[tuple[bool, bool]] = []
        self.cache: RecordCache | None = None

    async def call(self, op: RecordOp, timeout_s: float) -> Finished:
        self.asked.append(op)
        if self.cache is not None:  # what DNS would answer from, mid-load
            self.seen_during_load.append((self.cache.loaded, self.cache.lookup("h0") is not None))
        start = self.names.index(op.name) + 1 if op.name else 0
        names = self.names[start:start + self.page]
        records = tuple(Record(n, ("192.0.2.2",), owner=OWNER) for n in names)
        return Finished(op, "ok", "", 1, records, serial=7, full=True,
                        more=start + len(names) < len(self.names))


def test_a_full_listing_loads_page_by_page_and_swaps_at_the_end() -> None:
    cluster = PagedCluster(count=25, page=10)
    cache = RecordCache()
    cluster.cache = cache

    async def load() -> None:
        first = await cluster.call(RecordOp("record_changes", since=0), 1.0)
        await load_full_listing(cluster, cache, first)  # type: ignore[arg-type]

    asyncio.run(load())
    assert [op.name for op in cluster.asked] == ["", "h17", "h4"]   # name order: h0, h1, h10, ...
    assert all(op.since == 7 for op in cluster.asked[1:])
    assert cluster.seen_during_load == [(False, False)] * 3, "DNS saw a half-loaded copy"
    assert cache.loaded and len(cache) == 25 and cache.serial == 7


# --- while the copy loads, a stored name is read through the cluster ------------------------

class ReadingCluster:
    """A ClusterClient stand-in that answers ``record_get`` from ``records``;
    ``gate``, when set, holds every read until it opens."""

    def __init__(self, *records: Record) -> None:
        self.records = {r.name: r for r in records}
        self.reads: list[str] = []
        self.gate: asyncio.Event | None = None

    async def call(self, op: RecordOp, timeout_s: float) -> Finished:
        assert op.kind == "record_get", op
        self.reads.append(op.name)
        if self.gate is not None:
            await self.gate.wait()
        found = self.records.get(op.name)
        return Finished(op, "ok", "", 1, (found,) if found else (), serial=9)


def loading_service(cluster: ReadingCluster) -> tuple[DnsService, RecordCache]:
    """A front end whose copy is loading: the cluster answered a moment ago."""
    cache = RecordCache()
    cache.heard_at = time.monotonic()
    front = DnsService(cluster, FrontEndSettings(servers=(1,)), cache,  # type: ignore[arg-type]
                       FrontEndCounters())
    return front, cache


def test_while_loading_a_stored_name_is_read_through_and_answered_truly() -> None:
    cluster = ReadingCluster(Record("laptop", ("192.0.2.1",), owner=OWNER),
                             Record("gpu1.lab", ("192.0.2.7",), owner=OWNER))
    front, _ = loading_service(cluster)
    assert front.answer_now(query("laptop.mydns.")) is None, "must wait for the cluster's read"

    def ask(name: str, rdtype: str = "A") -> dns.message.Message:
        data = asyncio.run(front.answer(dns.message.make_query(name, rdtype).to_wire(), False))
        assert data is not None
        return dns.message.from_wire(data)

    reply = ask("laptop.mydns.")
    assert reply.rcode() == dns.rcode.NOERROR
    assert [rr.to_text() for rrset in reply.answer for rr in rrset] == ["192.0.2.1"]
    nodata = ask("laptop.mydns.", "AAAA")  # the name is stored, without IPv6: true NODATA
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    # Not stored, or an empty non-terminal ("lab" above gpu1.lab): unknown until loaded.
    assert ask("nobody.mydns.").rcode() == dns.rcode.SERVFAIL
    assert ask("lab.mydns.").rcode() == dns.rcode.SERVFAIL
    assert cluster.reads == ["laptop", "laptop", "nobody", "lab"]


def test_while_loading_reads_are_bounded_and_need_a_cluster_that_answered() -> None:
    cluster = ReadingCluster(Record("laptop", ("192.0.2.1",), owner=OWNER))
    front, cache = loading_service(cluster)

    async def flood() -> list[int]:
        cluster.gate = asyncio.Event()
        waiting = [asyncio.ensure_future(front.answer(query("laptop.mydns."), False))
                   for _ in range(LOADING_READS)]
        await asyncio.sleep(0)  # every read in flight at the cluster
        over = rcode_of(await front.answer(query("laptop.mydns."), False))
        cluster.gate.set()
        return [over, *map(rcode_of, await asyncio.gather(*waiting))]

    over, *answered = asyncio.run(flood())
    assert over == dns.rcode.SERVFAIL and len(cluster.reads) == LOADING_READS
    assert answered == [dns.rcode.NOERROR] * LOADING_READS
    cache.heard_at = time.monotonic() - LOADING_HEARD_S - 1  # the cluster went quiet
    assert rcode_of(front.answer_now(query("laptop.mydns.")).data) == dns.rcode.SERVFAIL  # type: ignore[union-attr]
    assert len(cluster.reads) == LOADING_READS, "no read without a cluster that answers"
