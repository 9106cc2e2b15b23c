"""The DNS logic of a front end: one request's bytes in, a reply out.

Pure: no sockets, no event loop, no clock. The UDP and TCP servers in
:mod:`mydns_lab.service.dnsfront` call :meth:`DnsFrontEnd.handle` with each request
(TCP: without the two-byte length prefix) and the wall clock ``now_s``, which
only TSIG uses; it answers from the front end's own view, the
:class:`~mydns_lab.dns.update.RecordView` it was built with. The
linearizable read mode calls :meth:`DnsFrontEnd.handle_with_view` instead,
passing the view to answer from. Either way the view travels down as an
argument to whatever reads it; the front end never swaps it. The reply is
one of

* :class:`Answer` -- send ``data`` back (over TCP with its length prefix);
* :class:`Drop` -- send nothing (too short to answer, or itself a response);
* :class:`UpdateNeeded` -- an authorised RFC 2136 UPDATE. The caller runs
  ``ops`` through the cluster *in order*, stopping at the first failure,
  collects one ``(status, value)`` per op run (``"ok"`` or a refusal of
  :data:`mydns_lab.protocol.REFUSALS` as the store answered, ``"timeout"``
  when the cluster did not answer) and sends
  ``finish(results)``. ``finish`` never raises.

``handle`` never raises either: a packet that cannot be parsed gets FORMERR
(or nothing when not even the 12-byte header is there), and a bug on any
other path gets SERVFAIL.

This module reads every request, checks EDNS and TSIG, answers queries and
builds every response's bytes. What an UPDATE means (prerequisites,
ownership, the ops it needs) is :mod:`mydns_lab.dns.update`'s, which this
module calls and which knows nothing of responses; the opcode and rcode
numbers and the zone's naming rule (:class:`~mydns_lab.dns.wire.Zone`) are
:mod:`mydns_lab.dns.wire`'s, shared by both.

**What is served.** The zone (default ``mydns.``) is answered
authoritatively (AA set) from a :class:`~mydns_lab.dns.update.RecordView`: A
and AAAA from the record's addresses; TXT as one RR ``updated=<ISO-8601
UTC>`` (when it was last refreshed: ``--expire`` counts from it), one
``access=open`` for an open name (any Put without a token may change it),
plus one RR per stored text; SOA and NS at the apex. The NS set is the
front end's :class:`~mydns_lab.dns.nameservers.NameServer` tuple (see that
module), in order; the SOA MNAME is its first name; an NS answer carries
every name's A and AAAA in the additional section, as many as fit
(additional data is optional: RFC 2181 section 9, so no TC for it), and A
and AAAA queries for those names are answered with their addresses,
whatever the store holds under the name (other types: NODATA). The SOA
serial is :func:`soa_serial` of ``view.serial``, its minimum (the
negative-caching TTL) is ``ttl``. Unknown names get NXDOMAIN, other types
NODATA, both with the SOA in the authority section; names outside the zone
get REFUSED. ANY is answered per RFC 8482 with one synthesised ``HINFO
"RFC8482" ""`` (cheap, and it tells the asker why). Empty non-terminals
(``lab`` when only ``gpu1.lab`` exists, ``ns`` above a name server
``b.ns``) answer NODATA when the view also offers ``has_descendants``
(:class:`SubtreeView`) or the name is above a name server's, NXDOMAIN
otherwise.

**Sizes.** Without EDNS a UDP answer is at most 512 bytes. With EDNS the
client's payload size is honoured but capped at 1232 bytes (the DNS Flag Day
2020 value: 1280-byte IPv6 minimum MTU less headers, so answers are never
fragmented); 1232 is also what we advertise. An answer that does not fit is
sent with TC set, the question and no records; over TCP the limit is 65535.

**Fast path.** :meth:`DnsFrontEnd.handle` first looks the request up in
a :class:`mydns_lab.dns.cache.ResponseCache` of whole responses to plain
queries, valid while ``view.serial`` stays the same, and keeps what the
full path answers there; the bytes are the same either way (the reasons
are in that module). ``handle_with_view`` never uses it.

**Reading and signing.** Requests are read by :mod:`mydns_lab.dns.wire`
(which says why not by dnslib); dnslib only builds the replies. TSIG keys,
the keys file and name ownership are :mod:`mydns_lab.dns.tsig`'s. Only
TSIG-signed UPDATEs are accepted (HMAC-SHA256, full 32-byte MAC, fudge
checked against ``now_s``; RFC 8945): unknown key or other algorithm is
NOTAUTH/BADKEY, a wrong MAC NOTAUTH/BADSIG, a time off by more than the
fudge (at most 300 s) NOTAUTH/BADTIME (signed), and so is a signed UPDATE
this front end verified before (its :class:`~mydns_lab.dns.tsig.SeenMacs`)
or the store refuses as a replay (see :mod:`mydns_lab.dns.update`); what
else refuses an UPDATE is listed there.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace
from typing import Callable, Protocol, Union, runtime_checkable

from dnslib import (AAAA, EDNS0, NS, RD, RR, SOA, TXT, A, DNSHeader, DNSLabel, DNSQuestion,
                    DNSRecord, EDNSOption)

from ..protocol import Record, RecordOp
from ..records import OPEN_OWNER
from .cache import ResponseCache
from .nameservers import DEFAULT_NAME_SERVERS, NameServer
from .tsig import BADTIME, KeyRing, SeenMacs, Signer, verify_request
from .update import RecordView, Refusal, plan_update, refusal_from_results
from .wire import (BADVERS, C_ANY, C_IN, EDE_NOT_AUTHORITATIVE, EDE_PROHIBITED, F_OPCODE, F_QR,
                   F_RD, FORMERR, HEADER_SIZE, NOERROR, NOTAUTH, NOTIMP, NXDOMAIN, OPT_EDE, QUERY,
                   REFUSED, SERVFAIL, T_A, T_AAAA, T_ANY, T_AXFR, T_HINFO, T_IXFR, T_MAILA,
                   T_MAILB, T_NS, T_OPT, T_SOA, T_TKEY, T_TSIG, T_TXT, UPDATE, Edns, Question,
                   WireError, WireMessage, WireRR, Zone, edns_and_tsig, parse_message)

__all__ = ["Answer", "Drop", "UpdateNeeded", "Reply", "SubtreeView", "DnsFrontEnd",
           "UDP_PAYLOAD_MAX", "soa_serial"]

UDP_PAYLOAD_MAX = 1232   # the EDNS payload we accept and advertise (see the module doc)
UDP_PLAIN_MAX = 512      # without EDNS (RFC 1035)
TCP_MAX = 65535
SOA_REFRESH_S, SOA_RETRY_S, SOA_EXPIRE_S = 3600, 900, 604800
SERIAL_MODULUS = 0xFFFFFFFF  # SOA serials 1 .. 2**32 - 1


def soa_serial(serial: int) -> int:
    """The SOA serial for a view at ``serial`` (which starts at 0 and rises
    with every change): ``serial + 1``, so an empty zone's is 1, never 0;
    past 2**32 - 1 it wraps to 1, which RFC 1982 serial arithmetic still
    reads as an increase (as it does every step of one)."""
    return serial % SERIAL_MODULUS + 1


# --- replies ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    """Send ``data`` to the client."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Drop:
    """Send nothing."""


@dataclass(frozen=True, slots=True)
class UpdateNeeded:
    """Run ``ops`` through the cluster in order, then send ``finish(results)``."""

    ops: tuple[RecordOp, ...]
    finish: Callable[[list[tuple[str, str]]], bytes] = field(compare=False)


Reply = Union[Answer, Drop, UpdateNeeded]


@runtime_checkable
class SubtreeView(Protocol):
    """Optional: a view that also knows whether names exist below a name."""

    def has_descendants(self, name: str) -> bool:
        ...


# --- responses --------------------------------------------------------------------------


@dataclass(slots=True)
class _Response:
    id: int
    opcode: int
    rd: bool
    edns: Edns | None
    question: Question | None = None
    rcode: int = NOERROR
    aa: bool = False
    answers: list[RR] = field(default_factory=list)
    authority: list[RR] = field(default_factory=list)
    additional: list[RR] = field(default_factory=list)  # optional: dropped to fit
    ede: tuple[int, str] | None = None
    signer: Signer | None = None


def _bare(ident: int, flags: int, rcode: int) -> bytes:
    """A header-only response: for requests we could not (or need not) parse."""
    reply_flags = F_QR | (flags & F_OPCODE) | (flags & F_RD) | (rcode & 0xF)
    return struct.pack("!6H", ident, reply_flags, 0, 0, 0, 0)


def _refuse(resp: _Response, rcode: int, ede: tuple[int, str] | None = None) -> _Response:
    """``resp`` turned into an error response: ``rcode``, no records, not
    authoritative, ``ede`` attached when the request had EDNS. The one way
    every refusal (a query's, TSIG's, an UPDATE's :class:`Refusal`) is made."""
    resp.rcode, resp.aa, resp.answers, resp.authority = rcode, False, [], []
    resp.additional = []
    resp.ede = ede
    return resp


def _refuse_update(resp: _Response, refusal: Refusal, now_s: int) -> _Response:
    """``resp`` refused as ``refusal`` says, its TSIG error (a replay's
    BADTIME) in the signature, which stays the key's."""
    _refuse(resp, refusal.rcode, refusal.ede)
    if refusal.tsig_error and resp.signer is not None:
        resp.signer = resp.signer.with_error(refusal.tsig_error, now_s)
    return resp


def _pack_body(resp: _Response, truncated: bool) -> bytes:
    header = DNSHeader(id=resp.id, bitmap=F_QR | (resp.opcode << 11) | (F_RD if resp.rd else 0))
    header.aa = int(resp.aa)
    header.tc = int(truncated)
    header.rcode = resp.rcode & 0xF
    record = DNSRecord(header)
    if resp.question is not None:
        q = resp.question
        record.add_question(DNSQuestion(DNSLabel(q.labels), q.qtype, q.qclass))
    if not truncated:
        record.rr.extend(resp.answers)
        record.auth.extend(resp.authority)
        record.ar.extend(resp.additional)
    if resp.edns is not None:
        options = []
        if resp.ede is not None:
            code, text = resp.ede
            options.append(EDNSOption(OPT_EDE, struct.pack("!H", code) + text[:200].encode()))
        record.add_ar(EDNS0(udp_len=UDP_PAYLOAD_MAX, ext_rcode=resp.rcode >> 4,
                            flags="do" if resp.edns.do else "", opts=options))
    return bytes(record.pack())


def _pack(resp: _Response, tcp: bool) -> bytes:
    """The response as bytes: without the additional RRs that do not fit
    the transport, last first; truncated (TC, question only) when it does
    not fit without any; signed last."""
    if tcp:
        limit = TCP_MAX
    elif resp.edns is not None:
        limit = max(UDP_PLAIN_MAX, min(resp.edns.payload, UDP_PAYLOAD_MAX))
    else:
        limit = UDP_PLAIN_MAX
    reserve = resp.signer.rr_size() if resp.signer is not None else 0
    body = _pack_body(resp, truncated=False)
    kept = len(resp.additional)
    while len(body) + reserve > limit and kept:
        kept -= 1
        body = _pack_body(replace(resp, additional=resp.additional[:kept]), truncated=False)
    if len(body) + reserve > limit:
        body = _pack_body(resp, truncated=True)
    return resp.signer.sign(body) if resp.signer is not None else body


def _iso_utc(ms: int) -> str:
    """``ms`` since the epoch as ISO-8601 UTC, to the second (proleptic
    Gregorian; Hinnant's civil-from-days, to keep ``datetime`` out)."""
    seconds = ms // 1000
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (1 if month <= 2 else 0)
    return f"{year:04d}-{month:02d}-{day:02d}T{hours:02d}:{minutes:02d}:{secs:02d}Z"


# --- the front end ------------------------------------------------------------------------


class DnsFrontEnd:
    """Answers DNS for one zone; one instance per front-end process, shared
    by its UDP and TCP servers. ``view`` is what :meth:`handle` answers
    from; the front end reads it, never replaces it. ``name_servers`` is
    the zone's NS set, first the SOA MNAME (built by
    :mod:`mydns_lab.dns.nameservers`; the default is one front end's at
    127.0.0.1)."""

    def __init__(self, zone: str = "mydns.", ttl: int = 60, *, view: RecordView,
                 keyring: KeyRing | None = None,
                 name_servers: tuple[NameServer, ...] = DEFAULT_NAME_SERVERS) -> None:
        self.zone = Zone.of(zone)
        if not 0 <= ttl <= 0x7FFFFFFF:
            raise ValueError(f"ttl {ttl} is out of range")
        if not name_servers or any(not (s.ipv4 or s.ipv6) for s in name_servers):
            raise ValueError("a zone needs at least one name server, each with an address")
        self.ttl = ttl
        self.view = view
        self.keyring = keyring if keyring is not None else KeyRing()
        self.name_servers = {server.name: server for server in name_servers}
        if len(self.name_servers) != len(name_servers):
            raise ValueError("a name server is listed twice")
        # Names above a name server's (``ns`` of ``b.ns``): empty non-terminals.
        self._above_name_servers = {name.split(".", k)[k] for name in self.name_servers
                                    for k in range(1, name.count(".") + 1)}
        self._zone_label = DNSLabel(self.zone.labels)
        # Zone.of: InvalidRecord for a name that is no name, or too long with the zone.
        self._ns_labels = [DNSLabel(Zone.of(f"{server.name}.{self.zone.name}").labels)
                           for server in name_servers]
        self._hostmaster = DNSLabel(("hostmaster".encode(),) + self.zone.labels)
        self.responses = ResponseCache()
        self.seen_updates = SeenMacs()

    # --- entry points ---

    def handle(self, packet: bytes, *, tcp: bool, now_s: float) -> Reply:
        """One request in, one reply out, answered from :attr:`view`; never
        raises (see the module doc). Plain queries are answered from
        :attr:`responses` when it has the answer; the bytes are the same
        either way."""
        try:
            packet = bytes(packet)
            cached = self.responses.reply(packet, tcp, self.view)
        except Exception:  # a cache bug must not cost the answer
            cached = None
        if cached is not None:
            return Answer(cached[0])
        reply = self._handle_safely(packet, self.view, tcp, now_s)
        if isinstance(reply, Answer):
            try:
                self.responses.learn(bytes(packet), tcp, self.view, reply.data)
            except Exception:  # keeping it is optional: the answer is right as it is
                pass
        return reply

    def handle_with_view(self, packet: bytes, view: RecordView, *, tcp: bool,
                         now_s: float) -> Reply:
        """:meth:`handle` answering from ``view`` instead of :attr:`view`
        (the read-through mode passes a view of one freshly read record),
        always through the full path; :attr:`responses` is neither read nor
        fed."""
        return self._handle_safely(packet, view, tcp, now_s)

    def queried_name(self, packet: bytes) -> str | None:
        """The stored form of the name a plain QUERY asks about; None for
        anything else (updates, other zones, unreadable packets)."""
        try:
            if (len(packet) < HEADER_SIZE
                    or struct.unpack_from("!H", packet, 2)[0] & (F_QR | F_OPCODE)):
                return None
            msg = parse_message(bytes(packet))
            if len(msg.questions) != 1:
                return None
            relative = self.zone.relative(msg.questions[0].labels)
            return Zone.record_name(relative) if relative else None
        except Exception:
            return None

    # --- the full path ---

    def _handle_safely(self, packet: bytes, view: RecordView, tcp: bool, now_s: float) -> Reply:
        """The full path, from ``view``: :meth:`handle` without the response cache."""
        try:
            return self._handle(bytes(packet), view, tcp, now_s)
        except Exception:  # a bug must cost one SERVFAIL, never the server loop
            try:
                if len(packet) < HEADER_SIZE:
                    return Drop()
                ident, flags = struct.unpack_from("!HH", bytes(packet[:4]))
                return Answer(_bare(ident, flags, SERVFAIL))
            except Exception:
                return Drop()

    def _handle(self, packet: bytes, view: RecordView, tcp: bool, now_s: float) -> Reply:
        """Read, check EDNS and TSIG, then answer the query or the UPDATE from ``view``."""
        if len(packet) < HEADER_SIZE:
            return Drop()
        ident, flags = struct.unpack_from("!HH", packet)
        if flags & F_QR:
            return Drop()
        opcode = (flags >> 11) & 0xF
        if opcode not in (QUERY, UPDATE):
            return Answer(_bare(ident, flags, NOTIMP))
        try:
            msg = parse_message(packet)
            edns, tsig_rr = edns_and_tsig(msg)
        except Exception:  # WireError, or a parser bug: either way we cannot read it
            return Answer(_bare(ident, flags, FORMERR))
        if len(msg.questions) != 1:
            return Answer(_bare(ident, flags, FORMERR))
        resp = _Response(ident, opcode, bool(flags & F_RD), edns, msg.questions[0])
        if edns is not None and edns.version != 0:
            return Answer(_pack(_refuse(resp, BADVERS), tcp))
        if tsig_rr is not None:
            failure = self._check_tsig(packet, tsig_rr, resp, int(now_s))
            if failure is not None:
                return Answer(_pack(failure, tcp))
        if opcode == UPDATE:
            return self._update(msg, resp, view, tcp, int(now_s))
        return Answer(_pack(self._query(resp, view), tcp))

    # --- queries ---

    def _soa(self, view: RecordView) -> RR:
        times = (soa_serial(view.serial), SOA_REFRESH_S, SOA_RETRY_S, SOA_EXPIRE_S, self.ttl)
        return RR(self._zone_label, T_SOA, C_IN, self.ttl,
                  SOA(self._ns_labels[0], self._hostmaster, times))

    def _query(self, resp: _Response, view: RecordView) -> _Response:
        """``resp`` filled in with the answer to its question, from ``view``."""
        q = resp.question
        assert q is not None
        relative = self.zone.relative(q.labels)
        if q.qclass not in (C_IN, C_ANY) or relative is None:
            return _refuse(resp, REFUSED, (EDE_NOT_AUTHORITATIVE,
                                           f"this server answers only for {self.zone.name}"))
        if q.qtype in (T_AXFR, T_IXFR, T_MAILA, T_MAILB):
            return _refuse(resp, NOTIMP)
        if q.qtype in (T_OPT, T_TSIG, T_TKEY):
            return _refuse(resp, FORMERR)
        resp.aa = True
        owner = DNSLabel(q.labels)
        if not relative:
            resp.answers = self._apex_rrs(owner, q.qtype, view)
            if q.qtype == T_NS:
                resp.additional = self._name_server_addresses()
        elif (name := Zone.record_name(relative)) in self.name_servers:
            # Configuration, not the store: no record can shadow a name server.
            server = self.name_servers[name]
            resp.answers = self._addresses(owner, q.qtype, server.ipv4, server.ipv6)
        else:
            record = view.lookup(name) if name is not None else None
            if record is None:
                if name is None or not (name in self._above_name_servers
                                        or _has_descendants(view, name)):
                    resp.rcode = NXDOMAIN
                resp.authority = [self._soa(view)]
                return resp
            resp.answers = self._record_rrs(owner, q.qtype, record)
        if not resp.answers:
            resp.authority = [self._soa(view)]
        return resp

    def _apex_rrs(self, owner: DNSLabel, qtype: int, view: RecordView) -> list[RR]:
        if qtype == T_SOA:
            soa = self._soa(view)
            soa.rname = owner
            return [soa]
        if qtype == T_NS:
            return [RR(owner, T_NS, C_IN, self.ttl, NS(label)) for label in self._ns_labels]
        if qtype == T_ANY:
            return [self._hinfo(owner)]
        return []

    def _name_server_addresses(self) -> list[RR]:
        """Every NS name's A and AAAA RRs, in the NS set's order."""
        return [rr for label, server in zip(self._ns_labels, self.name_servers.values())
                for rr in self._addresses(label, T_A, server.ipv4, ())
                + self._addresses(label, T_AAAA, (), server.ipv6)]

    def _addresses(self, owner: DNSLabel, qtype: int, ipv4: tuple[str, ...],
                   ipv6: tuple[str, ...]) -> list[RR]:
        """The answer to ``qtype`` at a name holding only addresses."""
        if qtype == T_A:
            return [RR(owner, T_A, C_IN, self.ttl, A(a)) for a in ipv4]
        if qtype == T_AAAA:
            return [RR(owner, T_AAAA, C_IN, self.ttl, AAAA(a)) for a in ipv6]
        if qtype == T_ANY:
            return [self._hinfo(owner)]
        return []

    def _record_rrs(self, owner: DNSLabel, qtype: int, record: Record) -> list[RR]:
        if qtype in (T_A, T_AAAA):
            return self._addresses(owner, qtype, record.ipv4, record.ipv6)
        if qtype == T_TXT:
            texts = [f"updated={_iso_utc(record.updated_ms)}",
                     *(["access=open"] if record.owner == OPEN_OWNER else []), *record.txt]
            return [RR(owner, T_TXT, C_IN, self.ttl, TXT(t.encode())) for t in texts]
        if qtype == T_ANY:
            return [self._hinfo(owner)]
        return []

    def _hinfo(self, owner: DNSLabel) -> RR:
        """RFC 8482 section 4.2: a synthesised HINFO instead of every RRset."""
        return RR(owner, T_HINFO, C_IN, self.ttl, RD(b"\x07RFC8482\x00"))

    # --- TSIG ---

    def _check_tsig(self, packet: bytes, record: WireRR, resp: _Response,
                    now_s: int) -> _Response | None:
        """Verify the request's TSIG (:func:`mydns_lab.dns.tsig.verify_request`)
        and, for an UPDATE, that this front end has not seen it before. Sets
        ``resp.signer``; returns the error response to send instead, if any."""
        try:
            resp.signer = verify_request(packet, record, self.keyring, now_s)
        except (WireError, struct.error):
            return _refuse(resp, FORMERR)
        if resp.signer.error:
            resp.rcode = NOTAUTH
            return resp
        key = resp.signer.key
        assert key is not None  # verified
        if resp.opcode == UPDATE and not self.seen_updates.first_sight(
                key.name, resp.signer.request_mac, resp.signer.request_time, now_s):
            reason = "this signed update was received before; sign a new one to send it again"
            return _refuse_update(resp, Refusal(NOTAUTH, (EDE_PROHIBITED, reason),
                                                tsig_error=BADTIME), now_s)
        return None

    # --- updates ---

    def _update(self, msg: WireMessage, resp: _Response, view: RecordView, tcp: bool,
                now_s: int) -> Reply:
        """An UPDATE whose TSIG (if any) verified: :func:`mydns_lab.dns.update.plan_update`
        against ``view`` decides; this packs the refusal, the empty success,
        or the ``finish`` of :class:`UpdateNeeded`."""
        signer = resp.signer
        key = signer.key if signer is not None else None
        planned = plan_update(msg, key, self.zone, view, name_servers=self.name_servers,
                              time_signed=signer.request_time if signer else 0,
                              mac=signer.request_mac if signer else b"")
        if isinstance(planned, Refusal):
            return Answer(_pack(_refuse_update(resp, planned, now_s), tcp))
        if not planned:
            return Answer(_pack(resp, tcp))
        ops = planned

        def finish(results: list[tuple[str, str]]) -> bytes:
            try:
                done = replace(resp)  # finish may be called more than once
                refusal = refusal_from_results(ops, results)
                if refusal is not None:
                    _refuse_update(done, refusal, now_s)
                return _pack(done, tcp)
            except Exception:  # never raise into the caller's event loop
                return _bare(resp.id, resp.opcode << 11, SERVFAIL)

        return UpdateNeeded(ops, finish)


def _has_descendants(view: RecordView, name: str) -> bool:
    """Whether names exist below ``name`` in ``view``; False when the view
    cannot say (it is not a :class:`SubtreeView`)."""
    return isinstance(view, SubtreeView) and bool(view.has_descendants(name))
