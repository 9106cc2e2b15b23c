"""The front end each clerk process runs: the JSON protocol (and DNS) on
UDP and TCP port ``--port + i``, answered through the cluster.

The JSON protocol is the original program's, kept compatible and made
honest:

    {"Type":"Put","Key":K,"Value":V[,"Token":T][,"Seq":N]}
        -> {"Type":"PutOk","Key":K,"Value":V,"Outcome":"claimed"|"updated"[,"Token":T]}
           (a token comes back once, when the front end made it to claim the name)
        |  {"Type":"Error","Error":"<reason>","Code":"<code>"}  (codes: RequestError)
    {"Type":"Query","Key":K}
        -> {"Type":"Response","Key":K,"Value":V}   ("" when K is unknown)
    {"Type":"Stats"}
        -> {"Type":"Stats","RequestsReceived":N,"RepliesSent":N,...}
           (this front end's counters, for measuring loss: to trusted sources only)

A request may carry an ``Id`` (an integer of 64 bits at most, or a string of
MAX_ID_CHARS at most); the reply echoes it, so a client can drop a late
answer. Every datagram but an untrusted Stats gets one reply, never longer
than the request or MAX_SMALL_REPLY_BYTES (see :func:`_fitted`).

V is an address or a list of addresses. Without ``Seq`` the front end
stamps the upload with its wall clock in milliseconds, so later uploads win.

DNS (every datagram that is not JSON, i.e. does not start with ``{`` or
holds a zero byte, and everything on TCP) is answered by
:class:`mydns_lab.dns.answers.DnsFrontEnd`. Reads come in two modes:

* ``cache`` (default): from this front end's copy of the committed records,
  a :class:`RecordCache` kept current by a watch on the leader (a change is
  pushed as soon as the leader applies it). Without a quorum it keeps
  answering the last records it knew, which is what DNS users want from a
  name service that is partly down.
* ``linearizable``: each query first reads the name through the cluster
  (ReadIndex), so an answer never predates an acknowledged update; without
  a quorum, queries get SERVFAIL.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import secrets
import signal
import sys
import time
from dataclasses import dataclass, field
from enum import StrEnum
from multiprocessing.connection import Connection
from typing import Any

from .clerks import Finished
from .dns.answers import Answer, DnsFrontEnd, Reply, UpdateNeeded
from .dns.tsig import KeyRing
from .net.cluster_client import ClusterClient, ClusterTimeout
from .net.procs import die_with_parent
from .net.transport import LAUNCHER
from .protocol import Outcome, Record, RecordOp, Status
from .records import MAX_SEQ, InvalidRecord, checked_op, json_owner, split_addresses
from .reports import ClerkStatus

STATUS_INTERVAL_S = 0.25
PUT_TIMEOUT_S = 3.0
QUERY_TIMEOUT_S = 2.0
WATCH_TIMEOUT_S = 1.0
TCP_IDLE_TIMEOUT_S = 10.0
MAX_LATENCY_SAMPLES = 512
MAX_SMALL_REPLY_BYTES = 512
"""A JSON reply may be this long even to a shorter request (a DNS answer
without EDNS is as long); beyond it, no longer than the request."""
MAX_ERROR_CHARS = 200
MAX_ID_CHARS = 64
MAX_TOKEN_CHARS = 256
LOOPBACK_NETWORKS = ("127.0.0.0/8", "::1/128")


@dataclass(frozen=True, slots=True)
class FrontEndSettings:
    servers: tuple[int, ...]
    port: int = 9876
    bind: str = "127.0.0.1"
    zone: str = "mydns."
    ttl: int = 60
    dns_reads: str = "cache"          # or "linearizable"
    keys_file: str | None = None      # TSIG keys for RFC 2136 updates
    trusted: tuple[str, ...] = LOOPBACK_NETWORKS  # CIDR networks whose Stats are answered


class RecordCache:
    """This front end's copy of the committed records (a RecordView).

    Fed only by :meth:`apply` and :meth:`replace`, with the leader's answers
    to watches. Until the first answer has been taken it is not ``loaded``: it
    holds nothing yet, and DNS must not answer from it (an empty copy would
    deny names that exist, and resolvers cache such denials).
    """

    def __init__(self) -> None:
        self.serial = 0
        self.loaded = False
        self._records: dict[str, Record] = {}
        self._parents: dict[str, int] = {}  # name -> how many records lie below it

    def lookup(self, name: str) -> Record | None:
        return self._records.get(name)

    def has_descendants(self, name: str) -> bool:
        return self._parents.get(name, 0) > 0

    def __len__(self) -> int:
        return len(self._records)

    def apply(self, records: tuple[Record, ...], serial: int, full: bool) -> None:
        """Take a watch answer at once: ``full`` replaces everything, else
        the named records change (no owner: deleted); ``serial`` is where
        the next watch resumes. Any answer to a watch from serial 0 is the
        whole store, so after the first one the cache is ``loaded``."""
        if full:
            self._records, self._parents = {}, {}
        for record in records:
            self._forget(record.name)
            if record.owner:
                self._add(record)
        self.serial = serial
        self.loaded = True

    def replace(self, fresh: RecordCache, serial: int) -> None:
        """Take ``fresh``'s records as of ``serial`` whole (a full listing
        that was gathered beside this copy)."""
        self._records, self._parents = fresh._records, fresh._parents
        self.serial = serial
        self.loaded = True

    def _add(self, record: Record) -> None:
        self._records[record.name] = record
        for parent in _parents_of(record.name):
            self._parents[parent] = self._parents.get(parent, 0) + 1

    def _forget(self, name: str) -> None:
        if self._records.pop(name, None) is not None:
            for parent in _parents_of(name):
                self._parents[parent] -= 1


def _parents_of(name: str) -> list[str]:
    labels = name.split(".")
    return [".".join(labels[i:]) for i in range(1, len(labels))]


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


@dataclass(slots=True)
class FrontEndCounters:
    requests_received: int = 0
    replies_sent: int = 0
    puts_ok: int = 0
    puts_failed: int = 0
    queries_ok: int = 0
    queries_failed: int = 0
    internal_errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    def record_latency(self, started: float) -> None:
        self.latencies_ms.append((time.monotonic() - started) * 1000)
        if len(self.latencies_ms) > MAX_LATENCY_SAMPLES:
            del self.latencies_ms[:MAX_LATENCY_SAMPLES // 2]


class RequestError(Exception):
    """A request we refuse; the message goes back to the client (shortened to
    MAX_ERROR_CHARS), with a machine-readable ``code``: ``bad_request``,
    ``invalid`` (a name or address), ``owned`` (another key's name),
    ``stale`` (an older Seq than stored), ``nospace`` (the store's disk is
    full: writes resume once its operator frees space; reads go on),
    ``unavailable`` (the cluster did not answer; try again), ``too_large``
    (see :func:`_fitted`). A bug inside the front end answers ``internal``."""

    def __init__(self, message: str, code: str = "bad_request") -> None:
        super().__init__(message)
        self.code = code


_REFUSAL_CODES = {Status.ERROR: "invalid", Status.OWNED: "owned", Status.STALE: "stale",
                  Status.NO_SPACE: "nospace"}
"""The ``Code`` of each status the record store refuses with."""


def _error(reason: str, code: str) -> dict[str, Any]:
    return {"Type": "Error", "Error": _shortened(reason, MAX_ERROR_CHARS), "Code": code}


def _shortened(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[:max(0, chars - 3)] + "..."


def _quoted(value: object) -> str:
    """A client's value in an error: a short string quoted, else its JSON type."""
    if isinstance(value, str):
        return repr(_shortened(value, 40))
    kinds = {dict: "an object", list: "an array", bool: "a boolean", int: "a number"}
    return kinds.get(type(value), "a number" if isinstance(value, float) else "null")


def _addresses_value(record: Record) -> str | list[str]:
    addresses = list(record.ipv4) + list(record.ipv6)
    return addresses[0] if len(addresses) == 1 else addresses


class JsonFrontEnd:
    """Answers the JSON protocol through a :class:`ClusterClient`; Stats
    only to sources in ``trusted`` (networks in CIDR notation)."""

    def __init__(self, client: ClusterClient, counters: FrontEndCounters,
                 trusted: tuple[str, ...] = LOOPBACK_NETWORKS) -> None:
        self._client = client
        self.counters = counters
        self._trusted = tuple(ipaddress.ip_network(n, strict=False) for n in trusted)
        self._internal_errors_seen: set[str] = set()

    async def handle(self, data: bytes, source: str | None = None) -> bytes | None:
        """One request datagram from IP address ``source`` (None: not from
        the network, never trusted) in, one reply datagram out, at most
        ``max(len(data), MAX_SMALL_REPLY_BYTES)`` long; None (send nothing)
        for Stats from an untrusted source. Never raises: an exception
        inside is a bug, answered with Code ``internal``."""
        self.counters.requests_received += 1
        started = time.monotonic()
        request: Any = None
        try:
            request = _decode_json(data)
            self._check(request)
            if request["Type"] == "Stats":
                if not self._is_trusted(source):
                    return None  # the operator's counters: silence leaves a spoofer nothing
                reply = self._stats()
            else:
                reply = await self._counted(request)
                self.counters.record_latency(started)
        except RequestError as exc:
            reply = _error(str(exc), exc.code)
        except Exception as exc:
            reply = self._internal_error(exc)
        self.counters.replies_sent += 1
        return _fitted(reply, _echoed_id(request), max(len(data), MAX_SMALL_REPLY_BYTES))

    def _internal_error(self, exc: Exception) -> dict[str, Any]:
        """The reply to a request that failed inside the front end; the
        first failure of each kind goes to stderr, the rest are counted."""
        self.counters.internal_errors += 1
        kind = type(exc).__name__
        if kind not in self._internal_errors_seen:
            self._internal_errors_seen.add(kind)
            print(f"front end: internal error on a JSON request: {kind}: {str(exc)[:200]!r} "
                  "(later ones of this kind are counted, not printed)", file=sys.stderr, flush=True)
        return _error(f"the front end failed on this request ({kind}), which may or may not "
                      "have taken effect; this is a bug in MyDNS, please report it", "internal")

    def _stats(self) -> dict[str, Any]:
        """This front end's own counters, for workloads measuring loss."""
        c = self.counters
        return {"Type": "Stats", "RequestsReceived": c.requests_received,
                "RepliesSent": c.replies_sent, "PutsOk": c.puts_ok, "PutsFailed": c.puts_failed,
                "QueriesOk": c.queries_ok, "QueriesFailed": c.queries_failed,
                "InternalErrors": c.internal_errors}

    def _is_trusted(self, source: str | None) -> bool:
        if source is None:
            return False
        try:
            address = ipaddress.ip_address(source)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # a dual-stack socket's view of an IPv4 sender
        return any(address in network for network in self._trusted)

    def _check(self, request: Any) -> None:
        """Refuse a request that is not a known Type with a string Key."""
        if not isinstance(request, dict):
            raise RequestError("request must be a JSON object with a Type")
        kind = request.get("Type")
        if not isinstance(kind, str) or kind not in ("Put", "Query", "Stats"):
            raise RequestError(f"unknown Type {_quoted(kind)}; use \"Put\" or \"Query\"")
        if kind != "Stats" and not isinstance(request.get("Key"), str):
            raise RequestError("Key must be a string (the host name)")

    async def _counted(self, request: dict[str, Any]) -> dict[str, Any]:
        """A checked Put or Query, counted ok, or failed when it raises."""
        put = request["Type"] == "Put"
        try:
            reply = await (self._put(request) if put else self._query(request))
        except Exception:
            if put:
                self.counters.puts_failed += 1
            else:
                self.counters.queries_failed += 1
            raise
        if put:
            self.counters.puts_ok += 1
        else:
            self.counters.queries_ok += 1
        return reply

    async def _put(self, request: dict[str, Any]) -> dict[str, Any]:
        token = request.get("Token")
        if token is not None and not _is_text(token, MAX_TOKEN_CHARS):
            raise RequestError(f"Token must be a string of at most {MAX_TOKEN_CHARS} characters "
                               "(text: no lone surrogate \\ud800-\\udfff)")
        seq = request.get("Seq", int(time.time() * 1000))
        if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= MAX_SEQ:
            # The codec carries no more than 64 bits: refuse here, not in a clerk.
            raise RequestError(f"Seq must be an integer from 0 to {MAX_SEQ} "
                               "(put.py sends the time in milliseconds)")
        value = request.get("Value")
        try:
            ipv4, ipv6 = split_addresses(_as_list(value))
        except InvalidRecord as exc:
            raise RequestError(str(exc), "invalid") from None
        new_token = None if token else secrets.token_urlsafe(24)
        op = _checked(RecordOp("record_set", request["Key"], ipv4=ipv4, ipv6=ipv6,
                               seq=seq, owner=json_owner(token or new_token or "")))
        finished = await self._call(op, PUT_TIMEOUT_S,
                                    "the update may or may not have been applied, try again")
        reply: dict[str, Any] = {"Type": "PutOk", "Key": request["Key"], "Value": value,
                                 "Outcome": finished.outcome}
        if finished.outcome == Outcome.CLAIMED and new_token:
            reply["Token"] = new_token
        return reply

    async def _query(self, request: dict[str, Any]) -> dict[str, Any]:
        op = _checked(RecordOp("record_get", request["Key"]))
        finished = await self._call(op, QUERY_TIMEOUT_S, "try again")
        value = _addresses_value(finished.records[0]) if finished.records else ""
        return {"Type": "Response", "Key": request["Key"], "Value": value}

    async def _call(self, op: RecordOp, timeout_s: float, on_timeout: str) -> Finished:
        """The store's OK answer to ``op``. A refusal raises RequestError with
        its Code; no answer in time raises ``unavailable``, the reason
        followed by ``on_timeout``."""
        try:
            finished = await self._client.call(op, timeout_s)
        except ClusterTimeout as exc:
            raise RequestError(f"{exc}; {on_timeout}", "unavailable") from None
        if finished.status != Status.OK:
            raise RequestError(finished.value, _REFUSAL_CODES.get(finished.status, "invalid"))
        return finished


def _checked(op: RecordOp) -> RecordOp:
    """:func:`mydns_lab.records.checked_op`, its refusal as a RequestError ``invalid``."""
    try:
        return checked_op(op)
    except InvalidRecord as exc:
        raise RequestError(str(exc), "invalid") from None


def _is_text(value: object, max_chars: int) -> bool:
    """A string of at most ``max_chars`` that UTF-8 can carry (JSON's
    ``\\ud800`` escapes make lone surrogates, which it cannot)."""
    if not isinstance(value, str) or len(value) > max_chars:
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _decode_json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except RecursionError:
        raise RequestError("request is not valid JSON: nested too deeply") from None
    except ValueError as exc:  # UnicodeDecodeError included
        raise RequestError(f"request is not valid JSON: {exc}") from None


def _echoed_id(request: Any) -> int | str | None:
    """The request's ``Id`` if it is one to echo: an integer of at most 64
    bits, or a string of at most MAX_ID_CHARS characters."""
    request_id = request.get("Id") if isinstance(request, dict) else None
    if isinstance(request_id, int) and -2**63 <= request_id < 2**64:
        return request_id
    if isinstance(request_id, str) and len(request_id) <= MAX_ID_CHARS:
        return request_id
    return None


def _fitted(reply: dict[str, Any], request_id: int | str | None, limit: int) -> bytes:
    """``reply`` with ``request_id`` as bytes of at most ``limit``. What
    does not fit is left out in this order: the Id; a PutOk's echoed Key
    and Value (the upload was taken: Outcome and a new Token must come
    back); an Error's text, shortened. A Response that does not fit
    becomes the error ``too_large``, which names the request size needed."""
    if request_id is not None:
        reply["Id"] = request_id
    data = _json_bytes(reply)
    if len(data) <= limit:
        return data
    reply.pop("Id", None)
    if reply["Type"] == "PutOk":
        reply.pop("Key", None)
        reply.pop("Value", None)
    elif reply["Type"] == "Response":
        reply = _error(f"the answer is {len(data)} bytes, longer than this request may draw; "
                       f"pad the request to {len(data)} bytes (any other field, such as "
                       "\"Pad\", is ignored) or ask over DNS", "too_large")
    data = _json_bytes(reply)
    while len(data) > limit and reply["Type"] == "Error" and reply["Error"]:
        keep = len(reply["Error"]) - (len(data) - limit) - 4  # each char is 1 byte or more
        reply["Error"] = reply["Error"][:keep] + "..." if keep > 0 else ""
        data = _json_bytes(reply)
    # Invariant: every reply fits; the smallest (an Error without text, a
    # PutOk without echoes) is far below MAX_SMALL_REPLY_BYTES.
    assert len(data) <= limit, data[:100]
    return data


def _json_bytes(reply: dict[str, Any]) -> bytes:
    return json.dumps(reply, separators=(",", ":")).encode()


def _as_list(value: object) -> list[Any]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return value
    raise RequestError("Value must be an address or a list of addresses")


class DnsService:
    """DNS answers for one front end: from the cache, or read-through."""

    def __init__(self, client: ClusterClient, settings: FrontEndSettings,
                 cache: RecordCache, counters: FrontEndCounters) -> None:
        keyring = KeyRing.load(settings.keys_file) if settings.keys_file else None
        self._dns = DnsFrontEnd(settings.zone, settings.ttl, view=cache, keyring=keyring)
        self._client = client
        self._cache = cache
        self._linearizable = settings.dns_reads == "linearizable"
        self.counters = counters

    async def answer(self, packet: bytes, tcp: bool) -> bytes | None:
        """The reply to send for ``packet``, or None to send nothing."""
        self.counters.requests_received += 1
        name = self._dns.queried_name(packet) if self._linearizable else None
        if not self._cache.loaded:
            reply = self._not_loaded(packet, tcp)
        elif name is not None:
            reply = await self._read_through(packet, name, tcp)
        else:
            reply = self._dns.handle(packet, tcp=tcp, now_s=time.time())
        if isinstance(reply, UpdateNeeded):
            data: bytes | None = await self._update(reply)
        else:
            data = reply.data if isinstance(reply, Answer) else None
        if data is not None:
            self.counters.replies_sent += 1
        return data

    def answer_now(self, packet: bytes) -> Reply | None:
        """The reply to a UDP ``packet`` when it needs no cluster round trip
        (a QUERY in cache mode), given at once; None when the caller must
        await :meth:`answer` instead (updates, linearizable reads)."""
        if self._linearizable or len(packet) < 3 or packet[2] & 0x78:  # opcode != QUERY
            return None
        self.counters.requests_received += 1
        if self._cache.loaded:
            reply = self._dns.handle(packet, tcp=False, now_s=time.time())
        else:
            reply = self._not_loaded(packet, tcp=False)
        if isinstance(reply, Answer):
            self.counters.replies_sent += 1
        return reply

    def _not_loaded(self, packet: bytes, tcp: bool) -> Reply:
        """SERVFAIL for a query, before the first copy of the records has
        loaded: a resolver tries another server and caches nothing for long,
        where NXDOMAIN would be cached for the SOA minimum."""
        return self._dns.handle_with_view(packet, _Unavailable(), tcp=tcp, now_s=time.time())

    async def _read_through(self, packet: bytes, name: str, tcp: bool):
        try:
            finished = await self._client.call(RecordOp("record_get", name), QUERY_TIMEOUT_S)
        except ClusterTimeout:
            finished = None
        if finished is None or finished.status != Status.OK:
            self.counters.queries_failed += 1
            return self._dns.handle_with_view(packet, _Unavailable(), tcp=tcp, now_s=time.time())
        self.counters.queries_ok += 1
        record = finished.records[0] if finished.records else None
        view = _OneRecordView(name, record, finished.serial, self._cache)
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


class _UdpFrontEnd(asyncio.DatagramProtocol):
    """The UDP side of a front end. A plain DNS query is answered and sent
    inside :meth:`datagram_received`, with no task; JSON requests, updates
    and linearizable reads get a task each."""

    def __init__(self, json_front: JsonFrontEnd, dns: DnsService) -> None:
        self._json = json_front
        self._dns = dns
        self._transport: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._is_json(data):
            handler = self._json.handle(data, addr[0])
        else:
            reply = self._dns.answer_now(data)
            if reply is not None:
                if isinstance(reply, Answer) and self._transport is not None:
                    self._transport.sendto(reply.data, addr)
                return
            handler = self._dns.answer(data, False)
        task = asyncio.ensure_future(self._reply(handler, addr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reply(self, handler: Any, addr: tuple[str, int]) -> None:
        reply = await handler
        if reply is not None and self._transport is not None:
            self._transport.sendto(reply, addr)

    @staticmethod
    def _is_json(data: bytes) -> bool:
        """JSON requests start with ``{``; so do DNS messages whose ID is
        0x7Bxx, but those hold a zero byte (the counts, the root label),
        which JSON text never does."""
        return data[:1] == b"{" and b"\0" not in data


async def _serve_tcp_client(dns: DnsService, reader: asyncio.StreamReader,
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


async def _watch_records(client: ClusterClient, cache: RecordCache) -> None:
    """Keep ``cache`` current: each answer names the serial to ask from next."""
    while not client.closed.is_set():
        try:
            finished = await client.call(RecordOp("record_changes", since=cache.serial),
                                         WATCH_TIMEOUT_S)
            if finished.status != Status.OK:
                continue
            if finished.full:
                await _load_full_listing(client, cache, finished)
            else:
                cache.apply(finished.records, finished.serial, full=False)
        except ClusterTimeout:
            continue  # no quorum: keep answering from what we have


async def _load_full_listing(client: ClusterClient, cache: RecordCache, first: Finished) -> None:
    """Gather a full listing page by page beside ``cache`` and swap it in
    whole at the end, so DNS answers from a complete copy (or SERVFAIL,
    before the first) while a large store loads, and no page is large
    enough to stall the loop. The copy is as of the first page's serial:
    the next watch asks for the changes since, which covers whatever moved
    while the pages came. A page that does not come starts it over."""
    fresh = RecordCache()
    page = first
    while True:
        fresh.apply(page.records, first.serial, full=False)
        if not page.more or not page.records:
            break
        page = await client.call(RecordOp("record_changes", since=first.serial,
                                          name=page.records[-1].name), WATCH_TIMEOUT_S)
        if page.status != Status.OK or not page.full:
            return
    cache.replace(fresh, first.serial)


def _status(index: int, client: ClusterClient, counters: FrontEndCounters) -> ClerkStatus:
    return ClerkStatus(index, os.getpid(), counters.puts_ok, counters.puts_failed,
                       counters.queries_ok, counters.queries_failed, client.counters.retries,
                       counters.requests_received, tuple(counters.latencies_ms[-64:]))


async def _report_status(index: int, client: ClusterClient, counters: FrontEndCounters) -> None:
    while not client.closed.is_set():
        client.send_status(LAUNCHER, _status(index, client, counters))
        try:
            await asyncio.wait_for(client.closed.wait(), STATUS_INTERVAL_S)
        except asyncio.TimeoutError:
            pass


# --- start-up: what a front end listens on, and how it tells the launcher ---------------

class Proto(StrEnum):
    UDP = "UDP"
    TCP = "TCP"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One socket the lab listens on: what the launcher checks before
    anything starts, and what a front end names when it cannot bind.
    ``port_flag`` is the flag that chose the port, for the hint."""

    proto: Proto
    address: str
    port: int
    port_flag: str = "--port"

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.proto} {host}:{self.port}"


def listen_endpoints(settings: FrontEndSettings, index: int) -> tuple[Endpoint, ...]:
    """Every socket front end ``index`` binds, in the order it binds them."""
    port = settings.port + index
    return Endpoint(Proto.UDP, settings.bind, port), Endpoint(Proto.TCP, settings.bind, port)


@dataclass(frozen=True, slots=True)
class FrontEndListening:
    """Sent once on the start pipe: every endpoint is bound; serving."""

    index: int


@dataclass(frozen=True, slots=True)
class FrontEndFailed:
    """Sent once on the start pipe instead, before the process exits 1:
    the front end could not start. ``endpoint`` and ``errno`` are set when
    binding that endpoint failed; ``reason`` is the error's own words."""

    index: int
    reason: str
    endpoint: Endpoint | None = None
    errno: int | None = None


class _BindError(Exception):
    def __init__(self, endpoint: Endpoint, error: OSError) -> None:
        super().__init__(f"{endpoint}: {error.strerror or error}")
        self.endpoint, self.error = endpoint, error


async def _listen(settings: FrontEndSettings, index: int, json_front: JsonFrontEnd,
                  dns: DnsService) -> tuple[asyncio.DatagramTransport, asyncio.Server]:
    """Bind the UDP and TCP endpoints; raises _BindError naming the one
    that failed (nothing stays bound)."""
    udp, tcp = listen_endpoints(settings, index)
    loop = asyncio.get_running_loop()
    try:
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpFrontEnd(json_front, dns), local_addr=(udp.address, udp.port))
    except OSError as exc:
        raise _BindError(udp, exc) from None
    try:
        server = await asyncio.start_server(
            lambda r, w: _serve_tcp_client(dns, r, w), tcp.address, tcp.port)
    except OSError as exc:
        transport.close()
        raise _BindError(tcp, exc) from None
    return transport, server


async def _serve(index: int, address: int, settings: FrontEndSettings, conn: Connection,
                 started: Connection) -> bool:
    """Serve until SIGTERM or the router goes; False when the front end
    could not start (after telling the launcher on ``started`` why)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    client = ClusterClient(conn, address, settings.servers)
    counters = FrontEndCounters()
    cache = RecordCache()
    try:
        json_front = JsonFrontEnd(client, counters, settings.trusted)
        dns = DnsService(client, settings, cache, counters)
        transport, tcp_server = await _listen(settings, index, json_front, dns)
    except _BindError as exc:
        _tell(started, FrontEndFailed(index, str(exc), exc.endpoint, exc.error.errno))
        return False
    except Exception as exc:  # a zone or keys file the launcher did not refuse: say so, not die
        _tell(started, FrontEndFailed(index, f"{type(exc).__name__}: {exc}"))
        return False
    _tell(started, FrontEndListening(index))
    background = [asyncio.ensure_future(_report_status(index, client, counters)),
                  asyncio.ensure_future(_watch_records(client, cache))]
    try:
        await asyncio.wait([asyncio.ensure_future(stop.wait()),
                            asyncio.ensure_future(client.closed.wait())],
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in background:
            task.cancel()
        transport.close()
        tcp_server.close()
        if not client.closed.is_set():
            # The final counters, so the launcher's table counts every operation.
            client.send_status(LAUNCHER, _status(index, client, counters))
            client.flush_now()
    return True


def _tell(started: Connection, message: FrontEndListening | FrontEndFailed) -> None:
    """The one message of the start pipe; a launcher gone already is no error."""
    try:
        started.send(message)
        started.close()
    except OSError:
        pass


def run_clerk(index: int, address: int, settings: FrontEndSettings, conn: Connection,
              started: Connection) -> None:
    """Process entry point of clerk ``index`` (front end on port + index).
    It sends one message on ``started``, :class:`FrontEndListening` once
    every endpoint is bound, or :class:`FrontEndFailed`, then exits 1."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not asyncio.run(_serve(index, address, settings, conn, started)):
        sys.exit(1)
