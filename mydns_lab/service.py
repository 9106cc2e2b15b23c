"""The front end each clerk process runs: the JSON protocol (and DNS) on
UDP and TCP port ``--port + i``, answered through the cluster.

The JSON protocol is the original program's, kept compatible and made
honest:

    {"Type":"Put","Key":K,"Value":V[,"Token":T | ,"Mac":M][,"Seq":N]}   (Mac needs Seq)
        -> {"Type":"PutOk","Key":K,"Value":V,"Outcome":"claimed"|"updated"[,"Open":true]}
        |  {"Type":"Error","Error":"<reason>","Code":"<code>"}  (codes: RequestError)
    {"Type":"Query","Key":K}
        -> {"Type":"Response","Key":K,"Value":V}   ("" when K is unknown)
    {"Type":"Stats"}
        -> {"Type":"Stats","RequestsReceived":N,"RepliesSent":N,...}
           (this front end's counters, for measuring loss: to trusted sources only)

A request may carry an ``Id`` (an integer of 64 bits at most, or a short
string: :func:`mydns_lab.net.jsonwire.echoed_id`); the reply echoes it, so a
client can drop a late or forged answer. Every datagram but an untrusted
Stats gets one reply, never longer than the request or
MAX_SMALL_REPLY_BYTES (:func:`mydns_lab.net.jsonwire.fitted_reply`).

V is an address or a list of addresses. Without ``Seq`` the front end
stamps the upload with its wall clock in milliseconds, so later uploads win.

A Put with a Token claims a free name for that token, and only that token
changes it afterwards (put.py makes and keeps one). A Put without a Token,
as the original's clients send it, claims an *open* name, which any later
Put without a Token may update, as in the original; no token or key can
take an open name (``Code: open``), and ``--open-names deny`` refuses Puts
without a Token. After the claim put.py sends no Token: a *signed* Put
carries ``Mac``, :func:`mydns_lab.records.put_mac` keyed by the owner the
store keeps (the token's hash) over zone, name, addresses and Seq, checked
here (``bad_signature``, ``unknown_name``), so a captured one changes no
other value or name, and once a newer upload is stored it is ``stale``.
Names the keys file grants to a TSIG key are for that key
only, and the zone's name servers (``ns1`` ..) for none (``Code: reserved``:
:mod:`mydns_lab.dns.nameservers`). New claims from an untrusted source are limited
per minute (``rate_limited``), the zone's size by ``--max-names``
(``zone_full``), and a name not refreshed within ``--expire`` is released
(:func:`mydns_lab.net.recordcopy.expire_records`). The rules are
:class:`mydns_lab.admission.Admission`.

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
import hmac
import os
import signal
import string
import sys
import time
from dataclasses import dataclass, field, replace
from functools import partial
from multiprocessing.connection import Connection
from typing import Any, Callable

from .admission import Admission, AdmissionPolicy, Refused, TrustedSources
from .clerks import Finished
from .dns.answers import Answer, DnsFrontEnd, Drop, Reply, UpdateNeeded
from .dns.nameservers import DEFAULT_NAME_SERVERS, NameServer
from .dns.rrl import ResponseRateLimiter, Verdict, truncated_reply
from .dns.tsig import KeyRing
from .dns.wire import UPDATE, question_type
from .etcd.options import EtcdOptions
from .net.cluster_client import ClusterClient, ClusterTimeout, RecordStore
from .net.endpoints import Endpoint, FrontEndFailed, FrontEndListening, Proto
from .net.jsonwire import (MAX_SMALL_REPLY_BYTES, RequestError, decode_request, echoed_id,
                           error_reply, fitted_reply, is_text, quoted)
from .net.recordcopy import RecordCache, expire_records, watch_records
from .net.procs import die_with_parent, set_role_title
from .net.transport import LAUNCHER
from .protocol import Outcome, Record, RecordOp, Status
from .records import (MAX_SEQ, OPEN_OWNER, InvalidRecord, checked_op, is_key_owner, json_owner,
                      put_mac, split_addresses)
from .reports import ClerkStatus
from .web.app import ClusterFile, WebContext, start_site, tls_context
from .web.http import HttpServer
from .web.metrics import FrontEndMetrics, UpdatePath, put_outcome, rcode_label

STATUS_INTERVAL_S = 0.25
PUT_TIMEOUT_S = 3.0
QUERY_TIMEOUT_S = 2.0
TCP_IDLE_TIMEOUT_S = 10.0
MAX_LATENCY_SAMPLES = 512
MAX_TOKEN_CHARS = 256
LOOPBACK_NETWORKS = ("127.0.0.0/8", "::1/128")
NOT_THE_OWNERS = frozenset({"owned", "bad_signature", "open"})
"""The Codes of a Put whose token or Mac is not the name owner's: guesses,
counted per source by :meth:`mydns_lab.admission.Admission.not_owner`."""


@dataclass(frozen=True, slots=True)
class FrontEndSettings:
    servers: tuple[int, ...]
    port: int = 9876
    bind: str = "127.0.0.1"
    zone: str = "mydns."
    ttl: int = 60
    dns_reads: str = "cache"          # or "linearizable"
    keys_file: str | None = None      # TSIG keys for RFC 2136 updates
    trusted: tuple[str, ...] = LOOPBACK_NETWORKS  # CIDR networks exempt from limits, answered Stats
    admission: AdmissionPolicy = AdmissionPolicy()
    rrl: int = 100                    # DNS responses a second to one client network (0: no limit)
    name_servers: tuple[NameServer, ...] = DEFAULT_NAME_SERVERS  # the apex NS set; reserved names
    http_port: int = 0                # HTTP (dyndns2, status, metrics) on http_port + i; 0: none
    http_bind: str | None = None      # None: the same address as DNS (bind)
    http_cert: str | None = None      # with http_key: HTTPS instead of HTTP
    http_key: str | None = None
    status_file: str | None = None    # the launcher's status.json, for the status page and metrics
    status_page: str = "local"        # --status-page: who sees the names on / (web/status.py)
    etcd: EtcdOptions | None = None   # --store etcd: the records are in etcd, not our servers


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
    rrl_dropped: int = 0              # UDP DNS responses over --rrl, not sent
    rrl_slipped: int = 0              # ... sent truncated instead (TC=1, no records)
    latencies_ms: list[float] = field(default_factory=list)

    def record_latency(self, started: float) -> None:
        self.latencies_ms.append((time.monotonic() - started) * 1000)
        if len(self.latencies_ms) > MAX_LATENCY_SAMPLES:
            del self.latencies_ms[:MAX_LATENCY_SAMPLES // 2]


_REFUSAL_CODES = {Status.ERROR: "invalid", Status.OWNED: "owned", Status.STALE: "stale",
                  Status.NO_SPACE: "nospace", Status.OPEN: "open", Status.ZONE_FULL: "zone_full"}
"""The ``Code`` of each status the record store refuses with."""


def _addresses_value(record: Record) -> str | list[str]:
    addresses = list(record.ipv4) + list(record.ipv6)
    return addresses[0] if len(addresses) == 1 else addresses


class JsonFrontEnd:
    """Answers the JSON protocol through a :class:`RecordStore`; Stats
    only to sources in ``trusted`` (networks in CIDR notation). Puts pass
    ``admission`` first (None: no limits, as in unit tests). A signed Put's
    ``Mac`` is checked against the owner in ``records``, this front end's
    copy, then (copy not loaded, behind, or None as in unit tests) against
    a read through the cluster; ``zone`` is part of what is signed."""

    def __init__(self, client: RecordStore, counters: FrontEndCounters,
                 trusted: tuple[str, ...] = LOOPBACK_NETWORKS, *,
                 admission: Admission | None = None, records: RecordCache | None = None,
                 zone: str = "mydns.", metrics: FrontEndMetrics | None = None) -> None:
        self._client = client
        self._metrics = metrics
        self.counters = counters
        self._trusted = TrustedSources(trusted)
        self._admission = admission
        self._records = records
        self._zone = zone
        self._internal_errors_seen: set[str] = set()

    async def handle(self, data: bytes, source: str | None = None,
                     path: UpdatePath = UpdatePath.JSON) -> bytes | None:
        """One request datagram from IP address ``source`` (None: not from
        the network, never trusted) in, one reply datagram out, at most
        ``max(len(data), MAX_SMALL_REPLY_BYTES)`` long; None (send nothing)
        for Stats from an untrusted source. Never raises: an exception
        inside is a bug, answered with Code ``internal``. A Put is counted
        in the metrics under ``path`` (the HTTP routes': dyndns2)."""
        self.counters.requests_received += 1
        started = time.monotonic()
        request: Any = None
        try:
            request = decode_request(data)
            self._check(request)
            if request["Type"] == "Stats":
                if source not in self._trusted:
                    return None  # the operator's counters: silence leaves a spoofer nothing
                reply = self._stats()
            else:
                reply = await self._counted(request, source)
                self.counters.record_latency(started)
        except RequestError as exc:
            reply = error_reply(str(exc), exc.code)
        except Exception as exc:
            reply = self._internalerror_reply(exc)
        self.counters.replies_sent += 1
        if self._metrics is not None and isinstance(request, dict) and request.get("Type") == "Put":
            self._metrics.update_done(path, put_outcome(reply), time.monotonic() - started)
        return fitted_reply(reply, echoed_id(request), max(len(data), MAX_SMALL_REPLY_BYTES))

    def _internalerror_reply(self, exc: Exception) -> dict[str, Any]:
        """The reply to a request that failed inside the front end; the
        first failure of each kind goes to stderr, the rest are counted."""
        self.counters.internal_errors += 1
        kind = type(exc).__name__
        if kind not in self._internal_errors_seen:
            self._internal_errors_seen.add(kind)
            print(f"front end: internal error on a JSON request: {kind}: {str(exc)[:200]!r} "
                  "(later ones of this kind are counted, not printed)", file=sys.stderr, flush=True)
        return error_reply(f"the front end failed on this request ({kind}), which may or may not "
                      "have taken effect; this is a bug in MyDNS, please report it", "internal")

    def _stats(self) -> dict[str, Any]:
        """This front end's own counters, for workloads measuring loss."""
        c = self.counters
        return {"Type": "Stats", "RequestsReceived": c.requests_received,
                "RepliesSent": c.replies_sent, "PutsOk": c.puts_ok, "PutsFailed": c.puts_failed,
                "QueriesOk": c.queries_ok, "QueriesFailed": c.queries_failed,
                "InternalErrors": c.internal_errors}

    def _check(self, request: Any) -> None:
        """Refuse a request that is not a known Type with a string Key."""
        if not isinstance(request, dict):
            raise RequestError("request must be a JSON object with a Type")
        kind = request.get("Type")
        if not isinstance(kind, str) or kind not in ("Put", "Query", "Stats"):
            raise RequestError(f"unknown Type {quoted(kind)}; use \"Put\" or \"Query\"")
        if kind != "Stats" and not isinstance(request.get("Key"), str):
            raise RequestError("Key must be a string (the host name)")

    async def _counted(self, request: dict[str, Any], source: str | None) -> dict[str, Any]:
        """A checked Put or Query, counted ok, or failed when it raises."""
        put = request["Type"] == "Put"
        try:
            reply = await (self._put(request, source) if put else self._query(request))
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

    async def _put(self, request: dict[str, Any], source: str | None) -> dict[str, Any]:
        token, mac = request.get("Token"), request.get("Mac")
        if token is not None and not is_text(token, MAX_TOKEN_CHARS):
            raise RequestError(f"Token must be a string of at most {MAX_TOKEN_CHARS} characters "
                               "(text: no lone surrogate \\ud800-\\udfff)")
        if mac is not None and (token is not None or "Seq" not in request):
            raise RequestError("a signed Put carries a Mac and the Seq it signed, and no Token "
                               "(the Token only claims a name)")
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
        admission = self._admission
        op = _checked(RecordOp("record_set", request["Key"], ipv4=ipv4, ipv6=ipv6, seq=seq,
                               owner=json_owner(token) if token else OPEN_OWNER,
                               max_names=admission.policy.max_names if admission else 0))
        if admission is not None:  # first: what it refuses costs the cluster nothing
            try:
                admission.check_put(op.name, token is not None or mac is not None, source,
                                    time.time())
            except Refused as exc:
                # This front end's copy may lag a claim just made: a stored name is no claim.
                if not exc.as_claim or await self._stored(op.name) is None:
                    raise RequestError(str(exc), exc.code) from None
        try:
            if mac is not None:  # the store re-checks the owner: a stale copy cannot be abused
                op = replace(op, owner=await self._signed_owner(op, mac))
            finished = await self._call(op, PUT_TIMEOUT_S,
                                        "the update may or may not have been applied, try again")
        except RequestError as exc:
            if admission is not None and exc.code in NOT_THE_OWNERS:
                admission.not_owner(source, time.time())
            raise
        if admission is not None and finished.outcome == Outcome.CLAIMED:
            admission.claimed(source, time.time())
        reply: dict[str, Any] = {"Type": "PutOk", "Key": request["Key"], "Value": value,
                                 "Outcome": finished.outcome}
        if op.owner == OPEN_OWNER:
            reply["Open"] = True
        return reply

    async def _signed_owner(self, op: RecordOp, mac: object) -> str:
        """The owner of ``op.name`` whose key made ``mac``
        (:func:`mydns_lab.records.put_mac`), from this front end's copy or,
        when that does not verify, a linearizable read. Raises RequestError
        ``bad_request``, ``unknown_name``, ``bad_signature``, ``open`` or
        ``unavailable``; the token never reaches the front end."""
        if not (isinstance(mac, str) and len(mac) == 64 and set(mac) <= set(string.hexdigits)):
            raise RequestError("Mac must be 64 hex digits: the HMAC-SHA256 of the upload "
                               "(put.py makes it)")
        given = bytes.fromhex(mac)
        def signed_by(owner: str) -> bool:  # noqa: E306
            wanted = put_mac(owner, self._zone, op.name, op.ipv4 + op.ipv6, op.seq)
            return hmac.compare_digest(bytes.fromhex(wanted), given)
        copy = self._records
        record = copy.lookup(op.name) if copy is not None and copy.loaded else None
        if record is None or not signed_by(record.owner):
            record = await self._stored(op.name)
            if record is None:
                raise RequestError(f"no name {op.name!r} to update with a Mac (released "
                                   "unrefreshed?); claim it again with a Token", "unknown_name")
            if not is_key_owner(record.owner) and not signed_by(record.owner):
                raise RequestError(f"the Mac of this upload of {op.name!r} is not its owner's "
                                   "(another key, or changed on the way); nothing changed",
                                   "bad_signature")
        if is_key_owner(record.owner):  # its owner comes from the key's name: no secret
            raise RequestError(f"name {op.name!r} belongs to a TSIG key: change it with nsupdate "
                               "and that key", "owned")
        if record.owner == OPEN_OWNER:
            raise RequestError(f"name {op.name!r} is open: update it with a Put without Token or "
                               "Mac", "open")
        return record.owner

    async def _query(self, request: dict[str, Any]) -> dict[str, Any]:
        record = await self._stored(_checked(RecordOp("record_get", request["Key"])).name)
        value = _addresses_value(record) if record else ""
        return {"Type": "Response", "Key": request["Key"], "Value": value}

    async def _stored(self, name: str) -> Record | None:
        """``name``'s record (stored form) by a linearizable read through the cluster."""
        finished = await self._call(RecordOp("record_get", name), QUERY_TIMEOUT_S, "try again")
        return finished.records[0] if finished.records else None

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


def _as_list(value: object) -> list[Any]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return value
    raise RequestError("Value must be an address or a list of addresses")


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

    async def answer(self, packet: bytes, tcp: bool) -> bytes | None:
        """The reply to send for ``packet``, or None to send nothing."""
        self.counters.requests_received += 1
        started = time.monotonic()
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
        if verdict is Verdict.SEND:
            return None
        self.counters.requests_received += 1
        slip = truncated_reply(packet) if verdict is Verdict.SLIP else None
        if slip is None:
            self.counters.rrl_dropped += 1
            return Drop()
        self.counters.rrl_slipped += 1
        self.counters.replies_sent += 1
        return Answer(slip)

    def answer_now(self, packet: bytes) -> Reply | None:
        """The reply to a UDP ``packet`` when it needs no cluster round trip
        (a QUERY in cache mode), given at once; None when the caller must
        await :meth:`answer` instead (updates, linearizable reads)."""
        if self._linearizable or len(packet) < 3 or packet[2] & 0x78:  # opcode != QUERY
            return None
        self.counters.requests_received += 1
        started = time.monotonic()
        if self._cache.loaded:
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
            limited = self._dns.rate_limited(data, addr[0])
            if limited is not None:
                if isinstance(limited, Answer) and self._transport is not None:
                    self._transport.sendto(limited.data, addr)
                return
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


def _admission(settings: FrontEndSettings, cache: RecordCache, keyring: KeyRing) -> Admission:
    """The JSON Puts' gate for this front end's flags and keys file."""
    def reserved(name: str) -> str | None:
        key = keyring.key_granting(name, settings.zone)
        return key.name if key else None
    return Admission(settings.admission, TrustedSources(settings.trusted), reserved,
                     lambda name: cache.lookup(name) is not None,
                     frozenset(server.name for server in settings.name_servers))


def _status(index: int, client: RecordStore, counters: FrontEndCounters) -> ClerkStatus:
    return ClerkStatus(index, os.getpid(), counters.puts_ok, counters.puts_failed,
                       counters.queries_ok, counters.queries_failed, client.counters.retries,
                       counters.requests_received, tuple(counters.latencies_ms[-64:]))


async def _report_status(index: int, client: RecordStore, counters: FrontEndCounters) -> None:
    while not client.closed.is_set():
        client.send_status(LAUNCHER, _status(index, client, counters))
        try:
            await asyncio.wait_for(client.closed.wait(), STATUS_INTERVAL_S)
        except asyncio.TimeoutError:
            pass


# --- start-up: what a front end listens on, and how it tells the launcher ---------------

def listen_endpoints(settings: FrontEndSettings, index: int) -> tuple[Endpoint, ...]:
    """Every socket front end ``index`` binds, in the order it binds them:
    DNS and JSON on UDP and TCP, then HTTP when ``http_port`` is set."""
    port = settings.port + index
    dns = Endpoint(Proto.UDP, settings.bind, port), Endpoint(Proto.TCP, settings.bind, port)
    if not settings.http_port:
        return dns
    return (*dns, Endpoint(Proto.TCP, settings.http_bind or settings.bind,
                           settings.http_port + index, "--http-port"))


class _BindError(Exception):
    def __init__(self, endpoint: Endpoint, error: OSError) -> None:
        super().__init__(f"{endpoint}: {error.strerror or error}")
        self.endpoint, self.error = endpoint, error


@dataclass(slots=True)
class _Listening:
    """What a front end has bound; :meth:`close` lets go of all of it."""

    udp: asyncio.DatagramTransport
    tcp: asyncio.Server
    http: HttpServer | None = None

    async def close(self) -> None:
        self.udp.close()
        self.tcp.close()
        if self.http is not None:
            await self.http.stop()


async def _listen(settings: FrontEndSettings, index: int, json_front: JsonFrontEnd,
                  dns: DnsService, web_context: WebContext) -> _Listening:
    """Bind the UDP, TCP and HTTP endpoints; raises _BindError naming the
    one that failed (nothing stays bound)."""
    udp, tcp, *http = listen_endpoints(settings, index)
    # A certificate that does not load raises here, before anything is bound.
    tls = (tls_context(settings.http_cert, settings.http_key)
           if http and settings.http_cert and settings.http_key else None)
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
    listening = _Listening(transport, server)
    if http:
        try:
            listening.http = await start_site(web_context, http[0].address, http[0].port, tls)
        except OSError as exc:
            await listening.close()
            raise _BindError(http[0], exc) from None
    return listening


async def _serve(index: int, address: int, settings: FrontEndSettings,
                 conn: Connection | None, started: Connection | Callable[[object], None],
                 direct: dict[int, Connection] | None = None) -> bool:
    """Serve until SIGTERM or the router goes; False when the front end
    could not start (after telling the launcher on ``started`` why)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    if not isinstance(started, Connection):  # alone (mydns frontend): Ctrl-C stops it too
        loop.add_signal_handler(signal.SIGINT, stop.set)
    counters = FrontEndCounters()
    cache = RecordCache()
    try:
        client = _store(settings, conn, address, direct)
        keyring = KeyRing.load(settings.keys_file) if settings.keys_file else None
        cluster = ClusterFile(settings.status_file)
        metrics = FrontEndMetrics(cache, cluster.read, counters)
        json_front = JsonFrontEnd(client, counters, settings.trusted,
                                  admission=_admission(settings, cache, keyring or KeyRing()),
                                  records=cache, zone=settings.zone, metrics=metrics)
        dns = DnsService(client, settings, cache, counters, keyring, metrics)
        web_context = WebContext(index, settings.zone, cache, TrustedSources(settings.trusted),
                                 # every Put over HTTP is a dyndns2 update, counted as one
                                 partial(json_front.handle, path=UpdatePath.DYNDNS2), cluster,
                                 metrics=metrics,
                                 status_page=settings.status_page,
                                 operation_totals=lambda: (counters.puts_ok, counters.queries_ok))
        listening = await _listen(settings, index, json_front, dns, web_context)
    except _BindError as exc:
        _tell(started, FrontEndFailed(index, str(exc), exc.endpoint, exc.error.errno))
        return False
    except Exception as exc:  # a zone or keys file the launcher did not refuse: say so, not die
        _tell(started, FrontEndFailed(index, f"{type(exc).__name__}: {exc}"))
        return False
    _tell(started, FrontEndListening(index))
    background = [asyncio.ensure_future(_report_status(index, client, counters)),
                  asyncio.ensure_future(watch_records(client, cache))]
    if settings.admission.expire_s > 0:
        background.append(asyncio.ensure_future(
            expire_records(client, cache, settings.admission.expire_s)))
    try:
        await asyncio.wait([asyncio.ensure_future(stop.wait()),
                            asyncio.ensure_future(client.closed.wait())],
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in background:
            task.cancel()
        if not client.closed.is_set():
            # The final counters first (the launcher waits a few seconds only),
            # so its table counts every operation.
            client.send_status(LAUNCHER, _status(index, client, counters))
            client.flush_now()
        await listening.close()
        if settings.etcd is not None:
            await _close_etcd_store(client)
    return True


def _store(settings: FrontEndSettings, conn: Connection | None, address: int,
           direct: dict[int, Connection] | None = None) -> RecordStore:
    """The records' store: etcd (``--store etcd``; then ``conn`` carries
    status reports to the launcher, if any), or our Raft servers over the
    router pipe ``conn`` and the pipes straight to them (``direct``)."""
    if settings.etcd is not None:
        # Imported here: the etcd store's client, aiohttp, costs a process
        # about 23 MB, which a front end of the embedded store never pays.
        from .etcd.store import EtcdStore
        return EtcdStore(settings.etcd, report=conn)
    assert conn is not None, "the embedded store is reached through the lab's router"
    return ClusterClient(conn, address, settings.servers, direct=direct)


async def _close_etcd_store(client: RecordStore) -> None:
    """Close the store :func:`_store` built for ``--store etcd``."""
    from .etcd.store import EtcdStore  # loaded already, by _store
    assert isinstance(client, EtcdStore)
    await client.close()


def _tell(started: Connection | Callable[[object], None],
          message: FrontEndListening | FrontEndFailed) -> None:
    """The one message of the start pipe (or, for a front end alone, of the
    callback it gave); a launcher gone already is no error."""
    if not isinstance(started, Connection):
        started(message)
        return
    try:
        started.send(message)
        started.close()
    except OSError:
        pass


def serve_alone(settings: FrontEndSettings, told: Callable[[object], None]) -> bool:
    """Run one front end in this process on ``settings.port`` (``mydns
    frontend``) until SIGTERM or Ctrl-C; ``told`` gets its
    FrontEndListening or FrontEndFailed. False when it could not start."""
    return asyncio.run(_serve(0, 0, settings, None, told))


def run_clerk(index: int, address: int, settings: FrontEndSettings, conn: Connection,
              started: Connection, direct: dict[int, Connection] | None = None) -> None:
    """Process entry point of clerk ``index`` (front end on port + index),
    reaching the servers through the router on ``conn`` or on ``direct``.
    It sends one message on ``started``, :class:`FrontEndListening` once
    every endpoint is bound, or :class:`FrontEndFailed`, then exits 1."""
    die_with_parent()
    set_role_title(f"frontend c{index}")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not asyncio.run(_serve(index, address, settings, conn, started, direct)):
        sys.exit(1)
