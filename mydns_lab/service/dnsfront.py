"""A front end's DNS over UDP and TCP, and the dispatch of its UDP socket.

DNS (every datagram that is not JSON, i.e. does not start with ``{`` or
holds a zero byte, and everything on TCP) is answered by
:class:`mydns_lab.dns.answers.DnsFrontEnd`. Reads come in two modes:

* ``cache`` (default): from this front end's copy of the committed records,
  a :class:`RecordCache` kept current by a watch on the leader (a change is
  pushed as soon as the leader applies it). Without a quorum it keeps
  answering the last records it knew, which is what DNS users want from a
  name service that is partly down. Until the first copy has loaded (with
  many names, seconds after a restart), a query for a stored name is read
  through the cluster once the cluster answers; any other gets SERVFAIL.
* ``linearizable``: each query first reads the name through the cluster
  (ReadIndex), so an answer never predates an acknowledged update; without
  a quorum, queries get SERVFAIL.

:class:`UdpFrontEnd` is fed by :class:`mydns_lab.net.udp.UdpServer`, a
batch of datagrams per wake-up: the queries whose answers the response
cache holds are answered in one pass (:meth:`DnsService.answer_from_cache`),
the rest one by one; JSON goes to :mod:`mydns_lab.service.jsonfront`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ..admission import TrustedSources
from ..dns.answers import Answer, DnsFrontEnd, Drop, Reply, UpdateNeeded
from ..dns.rrl import ResponseRateLimiter, Verdict, truncated_reply
from ..dns.tsig import KeyRing
from ..dns.wire import UPDATE, question_type
from ..net.cluster_client import ClusterTimeout, RecordStore
from ..net.recordcopy import RecordCache
from ..net.udp import Address, UdpServer
from ..protocol import Record, RecordOp, Status
from ..web.metrics import FrontEndMetrics, UpdatePath, rcode_label
from .jsonfront import JsonFrontEnd
from .settings import PUT_TIMEOUT_S, QUERY_TIMEOUT_S, FrontEndCounters, FrontEndSettings

TCP_IDLE_TIMEOUT_S = 10.0
LOADING_READS = 64
"""Queries a front end reads through the cluster at once while its copy of
the records loads; more than that in flight get SERVFAIL, so a flood during
a restart cannot pile reads onto the leader that is sending the copy."""
LOADING_HEARD_S = 2.0
"""While its copy loads, a front end reads a query's name through the
cluster only if the cluster answered it within this long (a page of the
copy came): before a leader exists such a read would only wait, and a
resolver is better served by an immediate SERVFAIL."""


class _OneRecordView:
    """The view a linearizable query is answered from: the record just read."""

    def __init__(self, name: str, record: Record | None, serial: int,
                 cache: RecordCache) -> None:
        self.serial = serial
        self._name, self._record, self._cache = name, record, cache

    def lookup(self, name: str) -> Record | None:
        return self._record if name == self._name else self._cache.lookup(name)

    def has_descendants(self, name: str) -> bool:
        return self._cache.has_descendants(name)


class _ReadWhileLoading:
    """The view a query is answered from while this front end's copy of the
    records loads: the name just read through the cluster, if it is stored.
    Anything else is unknown until the copy has loaded (an absent name may
    yet be an empty non-terminal, NODATA rather than NXDOMAIN), so it fails,
    and the query gets SERVFAIL: never a denial a resolver would cache."""

    def __init__(self, name: str, record: Record | None, serial: int) -> None:
        self.serial = serial
        self._name, self._record = name, record

    def lookup(self, name: str) -> Record | None:
        if name == self._name and self._record is not None:
            return self._record
        raise ClusterTimeout("the copy of the records is still loading")


class DnsService:
    """DNS answers for one front end: from the cache, or read-through."""

    def __init__(self, client: RecordStore, settings: FrontEndSettings,
                 cache: RecordCache, counters: FrontEndCounters,
                 keyring: KeyRing | None = None, metrics: FrontEndMetrics | None = None) -> None:
        self._dns = DnsFrontEnd(settings.zone, settings.ttl, view=cache, keyring=keyring,
                                name_servers=settings.name_servers)
        self._client = client
        self._cache = cache
        self._linearizable = settings.dns_reads == "linearizable"
        self.counters = counters
        self._metrics = metrics
        self._rrl = (ResponseRateLimiter(settings.rrl, TrustedSources(settings.trusted))
                     if settings.rrl > 0 else None)
        self._loading_reads = 0  # reads through the cluster in flight while the copy loads

    async def answer(self, packet: bytes, tcp: bool) -> bytes | None:
        """The reply to send for ``packet``, or None to send nothing."""
        self.counters.requests_received += 1
        started = time.monotonic()
        if not self._cache.loaded:
            reply = await self._while_loading(packet, tcp)
        elif self._linearizable and (name := self._dns.queried_name(packet)) is not None:
            reply = await self._read_through(packet, name, tcp)
        else:
            reply = self._dns.handle(packet, tcp=tcp, now_s=time.time())
        if isinstance(reply, UpdateNeeded):
            data: bytes | None = await self._update(reply)
        else:
            data = reply.data if isinstance(reply, Answer) else None
        if data is not None:
            self.counters.replies_sent += 1
            self._observe(data, started)
        return data

    def rate_limited(self, packet: bytes, source: str) -> Answer | Drop | None:
        """The response rate limit (``--rrl``, :mod:`mydns_lab.dns.rrl`) on a
        UDP request from ``source``, checked before the request is answered,
        so a flood costs no answer and no cluster round trip. None: answer
        it (:meth:`answer_now`, else :meth:`answer`). Otherwise what to send
        instead: nothing (:class:`Drop`), or every second time the slip, a
        truncated :class:`Answer` that sends a real client to TCP."""
        if self._rrl is None:
            return None
        verdict = self._rrl.verdict(source, time.monotonic())
        return None if verdict is Verdict.SEND else self._over_limit(packet, verdict)

    def _over_limit(self, packet: bytes, verdict: Verdict) -> Answer | Drop:
        """What :meth:`rate_limited` sends for a request over the limit, counted."""
        self.counters.requests_received += 1
        slip = truncated_reply(packet) if verdict is Verdict.SLIP else None
        if slip is None:
            self.counters.rrl_dropped += 1
            return Drop()
        self.counters.rrl_slipped += 1
        self.counters.replies_sent += 1
        return Answer(slip)

    def answer_from_cache(self, datagrams: list[tuple[bytes, Address]]
                          ) -> tuple[list[tuple[bytes, Address]], list[tuple[bytes, Address]]]:
        """The fast path of one read of the UDP socket: the responses the
        response cache holds for these datagrams, each under the rate limit,
        as ``(response, address)`` pairs to send; and the other datagrams,
        in order, for the usual path (:meth:`rate_limited`, then
        :meth:`answer_now` or :meth:`answer`). A datagram meets the rate
        limit once, here or there, and is counted once. The responses are
        the full path's, byte for byte (:mod:`mydns_lab.dns.cache`); the
        metrics count each with the time the whole batch took."""
        if self._linearizable or not self._cache.loaded:
            return [], datagrams
        cached, view = self._dns.responses.reply, self._cache
        verdict = self._rrl.verdict if self._rrl is not None else None
        replies: list[tuple[bytes, Address]] = []
        rest: list[tuple[bytes, Address]] = []
        answered: dict[tuple[int, int], int] = {}  # (qtype, rcode): responses
        started = time.monotonic()
        for data, addr in datagrams:
            try:
                hit = cached(data, False, view)
            except Exception:  # a cache bug must not cost the answer: the full path gives it
                hit = None
            if hit is None:
                rest.append((data, addr))
                continue
            if verdict is not None:
                over = verdict(addr[0], started)
                if over is not Verdict.SEND:
                    limited = self._over_limit(data, over)  # and counted
                    if isinstance(limited, Answer):
                        replies.append((limited.data, addr))
                    continue
            response, qtype = hit
            replies.append((response, addr))
            key = (qtype, response[3] & 0xF)
            answered[key] = answered.get(key, 0) + 1
        if answered:
            sent = sum(answered.values())
            self.counters.requests_received += sent
            self.counters.replies_sent += sent
            if self._metrics is not None:
                self._metrics.dns_answered_many(answered, time.monotonic() - started)
        return replies, rest

    def answer_now(self, packet: bytes) -> Reply | None:
        """The reply to a UDP ``packet`` when it needs no cluster round trip
        (a QUERY in cache mode), given at once; None when the caller must
        await :meth:`answer` instead (updates, linearizable reads, reads
        through the cluster while the copy loads)."""
        if self._linearizable or len(packet) < 3 or packet[2] & 0x78:  # opcode != QUERY
            return None
        loaded = self._cache.loaded
        if not loaded and self._may_read_while_loading():
            return None
        self.counters.requests_received += 1
        started = time.monotonic()
        if loaded:
            reply = self._dns.handle(packet, tcp=False, now_s=time.time())
        else:
            reply = self._not_loaded(packet, tcp=False)
        if isinstance(reply, Answer):
            self.counters.replies_sent += 1
            self._observe(reply.data, started)
        return reply

    def _observe(self, response: bytes, started: float) -> None:
        """A sent response in the metrics: an UPDATE's under rfc2136, else a query's."""
        if self._metrics is None or len(response) < 4:
            return
        rcode, seconds = response[3] & 0xF, time.monotonic() - started
        if (response[2] >> 3) & 0xF == UPDATE:  # a response's opcode is its request's
            self._metrics.update_done(UpdatePath.RFC2136, rcode_label(rcode).lower(), seconds)
        else:
            self._metrics.dns_answered(question_type(response), rcode, seconds)

    def _not_loaded(self, packet: bytes, tcp: bool) -> Reply:
        """SERVFAIL for a query, before the first copy of the records has
        loaded: a resolver tries another server and caches nothing for long,
        where NXDOMAIN would be cached for the SOA minimum."""
        return self._dns.handle_with_view(packet, _Unavailable(), tcp=tcp, now_s=time.time())

    def _may_read_while_loading(self) -> bool:
        """Whether a query may read its name through the cluster now, while
        the copy loads (see LOADING_HEARD_S and LOADING_READS)."""
        return (self._loading_reads < LOADING_READS
                and time.monotonic() - self._cache.heard_at < LOADING_HEARD_S)

    async def _while_loading(self, packet: bytes, tcp: bool) -> Reply:
        """A reply before the copy of the records has loaded (a restart with
        many names takes seconds): a plain query for a stored name is read
        through the cluster and answered truly, as soon as the cluster has
        a leader; anything else gets SERVFAIL, as before any copy."""
        name = self._dns.queried_name(packet)
        if name is None or not self._may_read_while_loading():
            return self._not_loaded(packet, tcp)
        self._loading_reads += 1
        try:
            return await self._read_through(packet, name, tcp, loading=True)
        finally:
            self._loading_reads -= 1

    async def _read_through(self, packet: bytes, name: str, tcp: bool, loading: bool = False):
        """The reply to a query for ``name``, read through the cluster:
        from that record and this front end's copy (linearizable mode), or
        from that record alone while the copy loads (``loading``)."""
        try:
            finished = await self._client.call(RecordOp("record_get", name), QUERY_TIMEOUT_S)
        except ClusterTimeout:
            finished = None
        if finished is None or finished.status != Status.OK:
            self.counters.queries_failed += 1
            return self._dns.handle_with_view(packet, _Unavailable(), tcp=tcp, now_s=time.time())
        self.counters.queries_ok += 1
        record = finished.records[0] if finished.records else None
        view = (_ReadWhileLoading(name, record, finished.serial) if loading
                else _OneRecordView(name, record, finished.serial, self._cache))
        return self._dns.handle_with_view(packet, view, tcp=tcp, now_s=time.time())

    async def _update(self, update: UpdateNeeded) -> bytes:
        results: list[tuple[str, str]] = []
        for op in update.ops:
            try:
                finished = await self._client.call(op, PUT_TIMEOUT_S)
            except ClusterTimeout as exc:
                results.append(("timeout", str(exc)))
                self.counters.puts_failed += 1
                break
            results.append((finished.status, finished.value))
            if finished.status != Status.OK:
                self.counters.puts_failed += 1
                break
            self.counters.puts_ok += 1
        return update.finish(results)


class _Unavailable:
    """A view whose lookups fail: the read-through mode without a quorum,
    or any mode before the first copy of the records has loaded.
    DnsFrontEnd turns the exception into SERVFAIL."""

    serial = 0

    def lookup(self, name: str) -> Record | None:
        raise ClusterTimeout("no quorum to read from")


class UdpFrontEnd:
    """The UDP side of a front end, fed by a :class:`UdpServer`. A plain DNS
    query is answered and sent inside :meth:`datagram_received`, with no
    task; JSON requests, updates and linearizable reads get a task each."""

    def __init__(self, json_front: JsonFrontEnd, dns: DnsService) -> None:
        self._json = json_front
        self._dns = dns
        self.server: UdpServer | None = None  # set once bound; replies go there
        self._tasks: set[asyncio.Task] = set()

    def datagrams_received(self, datagrams: list[tuple[bytes, Address]]) -> None:
        """One read of the socket: the cached answers first, in one pass
        (:meth:`DnsService.answer_from_cache`), then the rest one by one."""
        assert self.server is not None  # it is what calls this
        replies, rest = self._dns.answer_from_cache(datagrams)
        self.server.send_many(replies)
        for data, addr in rest:
            self.datagram_received(data, addr)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        if self._is_json(data):
            handler = self._json.handle(data, addr[0])
        else:
            limited = self._dns.rate_limited(data, addr[0])
            if limited is not None:
                if isinstance(limited, Answer):
                    self._send(limited.data, addr)
                return
            reply = self._dns.answer_now(data)
            if reply is not None:
                if isinstance(reply, Answer):
                    self._send(reply.data, addr)
                return
            handler = self._dns.answer(data, False)
        task = asyncio.ensure_future(self._reply(handler, addr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reply(self, handler: Any, addr: Address) -> None:
        reply = await handler
        if reply is not None:
            self._send(reply, addr)

    def _send(self, data: bytes, addr: Address) -> None:
        if self.server is not None:
            self.server.send(data, addr)

    @staticmethod
    def _is_json(data: bytes) -> bool:
        """JSON requests start with ``{``; so do DNS messages whose ID is
        0x7Bxx, but those hold a zero byte (the counts, the root label),
        which JSON text never does."""
        return data[:1] == b"{" and b"\0" not in data


async def serve_tcp_client(dns: DnsService, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> None:
    """DNS over TCP (RFC 7766): length-prefixed messages, several per
    connection, closed after an idle while or on anything malformed."""
    try:
        while True:
            header = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_TIMEOUT_S)
            length = int.from_bytes(header, "big")
            packet = await asyncio.wait_for(reader.readexactly(length), TCP_IDLE_TIMEOUT_S)
            reply = await dns.answer(packet, True)
            if reply is not None:
                writer.write(len(reply).to_bytes(2, "big") + reply)
                await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError, OSError):
        pass
    finally:
        writer.close()
