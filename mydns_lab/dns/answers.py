"""The DNS logic of a front end: one request's bytes in, a reply out.

Pure: no sockets, no event loop, no clock. The UDP and TCP servers in
:mod:`mydns_lab.service` call :meth:`DnsFrontEnd.handle` with each request
(TCP: without the two-byte length prefix) and the wall clock ``now_s``, which
only TSIG uses. The reply is one of

* :class:`Answer` -- send ``data`` back (over TCP with its length prefix);
* :class:`Drop` -- send nothing (too short to answer, or itself a response);
* :class:`UpdateNeeded` -- an authorised RFC 2136 UPDATE. The caller runs
  ``ops`` through the cluster *in order*, stopping at the first failure,
  collects one ``(status, value)`` per op run (``"ok"`` or a refusal of
  :data:`mydns_lab.messages.REFUSALS` as the store answered, ``"timeout"``
  when the cluster did not answer) and sends
  ``finish(results)``. ``finish`` never raises.

``handle`` never raises either: a packet that cannot be parsed gets FORMERR
(or nothing when not even the 12-byte header is there), and a bug on any
other path gets SERVFAIL.

**What is served.** The zone (default ``mydns.``) is answered
authoritatively (AA set) from a :class:`RecordView`: A and AAAA from the
record's addresses; TXT as one RR ``updated=<ISO-8601 UTC>`` plus one RR per
stored text; SOA and NS at the apex. The SOA serial is ``view.serial``, its
minimum (the negative-caching TTL) is ``ttl``. Unknown names get NXDOMAIN,
other types NODATA, both with the SOA in the authority section; names
outside the zone get REFUSED. ANY is answered per RFC 8482 with one
synthesised ``HINFO "RFC8482" ""`` (cheap, and it tells the asker why).
Empty non-terminals (``lab`` when only ``gpu1.lab`` exists) answer NODATA
when the view also offers ``has_descendants`` (:class:`SubtreeView`),
NXDOMAIN otherwise.

**Sizes.** Without EDNS a UDP answer is at most 512 bytes. With EDNS the
client's payload size is honoured but capped at 1232 bytes (the DNS Flag Day
2020 value: 1280-byte IPv6 minimum MTU less headers, so answers are never
fragmented); 1232 is also what we advertise. An answer that does not fit is
sent with TC set, the question and no records; over TCP the limit is 65535.

**Fast path.** :meth:`DnsFrontEnd.handle` first looks the request up in
a :class:`mydns_lab.dnscache.ResponseCache` of whole responses to plain
queries, valid while ``view.serial`` stays the same, and keeps what the
full path answers there; the bytes are the same either way (the reasons
are in that module). ``handle_with_view`` never uses it.

**Reading and signing.** Requests are read by :mod:`mydns_lab.dnswire`
(which says why not by dnslib); dnslib only builds the replies. TSIG keys,
the keys file and name ownership are :mod:`mydns_lab.tsig`'s.

**Updates.** Only TSIG-signed UPDATEs are accepted (HMAC-SHA256, full
32-byte MAC, fudge checked against ``now_s``; RFC 8945). Unsigned: REFUSED.
Unknown key or other algorithm: NOTAUTH/BADKEY; wrong MAC: NOTAUTH/BADSIG;
time off by more than the fudge: NOTAUTH/BADTIME (signed). Zone section not
our zone, or an RR outside it: NOTZONE. A name the key is not granted (see
the keys file), owned by another key or token, the apex, or a type other
than A/AAAA being added: REFUSED. Prerequisites
(RFC 2136 section 2.4) are all supported, value-dependent ones for A and
AAAA (NOTIMP for other types); they are checked against the view when the
request arrives, not atomically with the write. Updates may add an A/AAAA
RR, delete one, delete an RRset or delete every RRset of a name; deletes of
types the store does not keep are no-ops, and TTLs in the request are
ignored (every answer uses ``ttl``). The store replaces a name's whole
address set, so each touched name becomes one ``record_set`` (keeping its
TXT, ``seq`` = stored seq + 1) or, when no address is left, one
``record_delete``. Names are changed one op at a time: if a later op fails,
earlier names stay changed.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from dataclasses import dataclass, field, replace
from typing import Callable, Protocol, Union, runtime_checkable

from dnslib import (AAAA, EDNS0, NS, RD, RR, SOA, TXT, A, DNSHeader, DNSLabel, DNSQuestion,
                    DNSRecord, EDNSOption)

from ..protocol import REFUSALS, Record, RecordOp
from ..records import InvalidRecord, normalize_name, split_addresses
from .cache import ResponseCache
from .tsig import KeyRing, Signer, TsigKey, verify_request
from .wire import (C_ANY, C_IN, C_NONE, F_OPCODE, F_QR, F_RD, HEADER_SIZE, META_TYPES, T_A, T_AAAA,
                   T_ANY, T_AXFR, T_HINFO, T_IXFR, T_MAILA, T_MAILB, T_NS, T_OPT, T_SOA, T_TKEY,
                   T_TSIG, T_TXT, Edns, Labels, Question, WireError, WireMessage, WireRR,
                   edns_and_tsig, lower_labels, parse_message)

__all__ = ["Answer", "Drop", "UpdateNeeded", "Reply", "RecordView", "SubtreeView",
           "DnsFrontEnd", "UDP_PAYLOAD_MAX"]

UDP_PAYLOAD_MAX = 1232   # the EDNS payload we accept and advertise (see the module doc)
UDP_PLAIN_MAX = 512      # without EDNS (RFC 1035)
TCP_MAX = 65535
SOA_REFRESH_S, SOA_RETRY_S, SOA_EXPIRE_S = 3600, 900, 604800

# opcodes and rcodes (the TSIG errors are in mydns_lab.tsig; header bits in mydns_lab.dnswire)
QUERY, UPDATE = 0, 5
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
YXDOMAIN, YXRRSET, NXRRSET, NOTAUTH, NOTZONE, BADVERS = 6, 7, 8, 9, 10, 16
# Extended DNS Errors (RFC 8914), attached to refusals when the request had EDNS
EDE_OTHER, EDE_PROHIBITED, EDE_NOT_AUTHORITATIVE, EDE_NOT_SUPPORTED = 0, 18, 20, 21
OPT_EDE = 15

_LDH_LABEL = re.compile(rb"^[A-Za-z0-9-]{1,63}$")


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


class RecordView(Protocol):
    """The records as this front end last saw them."""

    serial: int  # rises with every change; the SOA serial

    def lookup(self, name: str) -> Record | None:
        """The record of ``name`` (relative to the zone, normalised), or None."""
        ...


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
    ede: tuple[int, str] | None = None
    signer: Signer | None = None


@dataclass(frozen=True, slots=True)
class _Refusal:
    """Why an UPDATE is refused as a whole."""

    rcode: int
    ede: tuple[int, str] | None = None


def _bare(ident: int, flags: int, rcode: int) -> bytes:
    """A header-only response: for requests we could not (or need not) parse."""
    reply_flags = F_QR | (flags & F_OPCODE) | (flags & F_RD) | (rcode & 0xF)
    return struct.pack("!6H", ident, reply_flags, 0, 0, 0, 0)


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
    if resp.edns is not None:
        options = []
        if resp.ede is not None:
            code, text = resp.ede
            options.append(EDNSOption(OPT_EDE, struct.pack("!H", code) + text[:200].encode()))
        record.add_ar(EDNS0(udp_len=UDP_PAYLOAD_MAX, ext_rcode=resp.rcode >> 4,
                            flags="do" if resp.edns.do else "", opts=options))
    return bytes(record.pack())


def _pack(resp: _Response, tcp: bool) -> bytes:
    """The response as bytes: truncated (TC, question only) when it does not
    fit the transport, signed last."""
    if tcp:
        limit = TCP_MAX
    elif resp.edns is not None:
        limit = max(UDP_PLAIN_MAX, min(resp.edns.payload, UDP_PAYLOAD_MAX))
    else:
        limit = UDP_PLAIN_MAX
    reserve = resp.signer.rr_size() if resp.signer is not None else 0
    body = _pack_body(resp, truncated=False)
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
    """Answers DNS for one zone from a :class:`RecordView`; one instance per
    front-end process, shared by its UDP and TCP servers."""

    def __init__(self, zone: str = "mydns.", ttl: int = 60, *, view: RecordView,
                 keyring: KeyRing | None = None, ns_name: str | None = None) -> None:
        self.zone = normalize_name(zone) + "."
        self.zone_labels: Labels = tuple(p.encode() for p in self.zone[:-1].split("."))
        if not 0 <= ttl <= 0x7FFFFFFF:
            raise ValueError(f"ttl {ttl} is out of range")
        self.ttl = ttl
        self.view = view
        self.keyring = keyring if keyring is not None else KeyRing()
        ns = ns_name if ns_name is not None else "ns1." + self.zone
        self._zone_label = DNSLabel(self.zone_labels)
        self._ns_label = DNSLabel(ns if ns.endswith(".") else ns + ".")
        self._hostmaster = DNSLabel(("hostmaster".encode(),) + self.zone_labels)
        self.responses = ResponseCache()

    # --- entry point ---

    def handle(self, packet: bytes, *, tcp: bool, now_s: float) -> Reply:
        """One request in, one reply out; never raises (see the module doc).
        Plain queries are answered from :attr:`responses` when it has the
        answer; the bytes are the same either way."""
        try:
            packet = bytes(packet)
            cached = self.responses.reply(packet, tcp, self.view)
        except Exception:  # a cache bug must not cost the answer
            cached = None
        if cached is not None:
            return Answer(cached)
        reply = self._handle_safely(packet, tcp, now_s)
        if isinstance(reply, Answer):
            try:
                self.responses.learn(bytes(packet), tcp, self.view, reply.data)
            except Exception:  # keeping it is optional: the answer is right as it is
                pass
        return reply

    def _handle_safely(self, packet: bytes, tcp: bool, now_s: float) -> Reply:
        """The full path: :meth:`handle` without the response cache."""
        try:
            return self._handle(bytes(packet), tcp, now_s)
        except Exception:  # a bug must cost one SERVFAIL, never the server loop
            try:
                if len(packet) < HEADER_SIZE:
                    return Drop()
                ident, flags = struct.unpack_from("!HH", bytes(packet[:4]))
                return Answer(_bare(ident, flags, SERVFAIL))
            except Exception:
                return Drop()

    def handle_with_view(self, packet: bytes, view: RecordView, *, tcp: bool,
                         now_s: float) -> Reply:
        """:meth:`handle` answering from ``view`` instead of ``self.view``
        (the read-through mode passes a view of one freshly read record),
        always through the full path."""
        saved, self.view = self.view, view
        try:
            return self._handle_safely(packet, tcp, now_s)
        finally:
            self.view = saved

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
            relative = self._relative(msg.questions[0].labels)
            return self._record_name(relative) if relative else None
        except Exception:
            return None

    def _handle(self, packet: bytes, tcp: bool, now_s: float) -> Reply:
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
            resp.rcode = BADVERS
            return Answer(_pack(resp, tcp))
        if tsig_rr is not None:
            failure = self._check_tsig(packet, tsig_rr, resp, int(now_s))
            if failure is not None:
                return Answer(_pack(failure, tcp))
        if opcode == UPDATE:
            return self._update(msg, resp, tcp)
        return Answer(_pack(self._query(resp), tcp))

    # --- queries ---

    def _relative(self, labels: Labels) -> Labels | None:
        """``labels`` without the zone suffix; None when outside the zone."""
        n = len(self.zone_labels)
        if len(labels) < n or lower_labels(labels[len(labels) - n:]) != self.zone_labels:
            return None
        return labels[:len(labels) - n]

    @staticmethod
    def _record_name(relative: Labels) -> str | None:
        """The stored form of a relative name, or None if no record can have it."""
        if not relative or not all(_LDH_LABEL.match(label) for label in relative):
            return None
        try:
            return normalize_name(b".".join(relative).decode("ascii"))
        except InvalidRecord:
            return None

    def _soa(self) -> RR:
        times = (self.view.serial & 0xFFFFFFFF, SOA_REFRESH_S, SOA_RETRY_S, SOA_EXPIRE_S, self.ttl)
        return RR(self._zone_label, T_SOA, C_IN, self.ttl,
                  SOA(self._ns_label, self._hostmaster, times))

    def _query(self, resp: _Response) -> _Response:
        q = resp.question
        assert q is not None
        relative = self._relative(q.labels)
        if q.qclass not in (C_IN, C_ANY) or relative is None:
            resp.rcode = REFUSED
            resp.ede = (EDE_NOT_AUTHORITATIVE, f"this server answers only for {self.zone}")
            return resp
        if q.qtype in (T_AXFR, T_IXFR, T_MAILA, T_MAILB):
            resp.rcode = NOTIMP
            return resp
        if q.qtype in (T_OPT, T_TSIG, T_TKEY):
            resp.rcode = FORMERR
            return resp
        resp.aa = True
        owner = DNSLabel(q.labels)
        if not relative:
            resp.answers = self._apex_rrs(owner, q.qtype)
        else:
            name = self._record_name(relative)
            record = self.view.lookup(name) if name is not None else None
            if record is None:
                if name is None or not self._has_descendants(name):
                    resp.rcode = NXDOMAIN
                resp.authority = [self._soa()]
                return resp
            resp.answers = self._record_rrs(owner, q.qtype, record)
        if not resp.answers:
            resp.authority = [self._soa()]
        return resp

    def _has_descendants(self, name: str) -> bool:
        return isinstance(self.view, SubtreeView) and bool(self.view.has_descendants(name))

    def _apex_rrs(self, owner: DNSLabel, qtype: int) -> list[RR]:
        if qtype == T_SOA:
            soa = self._soa()
            soa.rname = owner
            return [soa]
        if qtype == T_NS:
            return [RR(owner, T_NS, C_IN, self.ttl, NS(self._ns_label))]
        if qtype == T_ANY:
            return [self._hinfo(owner)]
        return []

    def _record_rrs(self, owner: DNSLabel, qtype: int, record: Record) -> list[RR]:
        if qtype == T_A:
            return [RR(owner, T_A, C_IN, self.ttl, A(a)) for a in record.ipv4]
        if qtype == T_AAAA:
            return [RR(owner, T_AAAA, C_IN, self.ttl, AAAA(a)) for a in record.ipv6]
        if qtype == T_TXT:
            texts = [f"updated={_iso_utc(record.updated_ms)}", *record.txt]
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
        """Verify the request's TSIG (:func:`mydns_lab.tsig.verify_request`).
        Sets ``resp.signer``; returns the error response to send instead, if any."""
        try:
            resp.signer = verify_request(packet, record, self.keyring, now_s)
        except (WireError, struct.error):
            return self._refusal(resp, FORMERR)
        if resp.signer.error:
            resp.rcode = NOTAUTH
            return resp
        return None

    @staticmethod
    def _refusal(resp: _Response, rcode: int, ede: tuple[int, str] | None = None) -> _Response:
        resp.rcode, resp.aa, resp.answers, resp.authority = rcode, False, [], []
        resp.ede = ede
        return resp

    # --- updates ---

    def _update(self, msg: WireMessage, resp: _Response, tcp: bool) -> Reply:
        """RFC 2136: check, then turn the update into record ops."""
        key = resp.signer.key if resp.signer is not None else None
        if key is None:
            return Answer(_pack(self._refusal(
                resp, REFUSED, (EDE_PROHIBITED, "updates must be signed with a TSIG key")), tcp))
        zone = resp.question
        assert zone is not None
        if zone.qtype != T_SOA or zone.qclass != C_IN:
            return Answer(_pack(self._refusal(resp, FORMERR), tcp))
        if self._relative(zone.labels) != ():
            return Answer(_pack(self._refusal(
                resp, NOTZONE, (EDE_NOT_AUTHORITATIVE, f"this server updates only {self.zone}")),
                tcp))
        outcome = self._check_prerequisites(msg.answers) or self._plan(msg.authority, key)
        if isinstance(outcome, _Refusal):
            return Answer(_pack(self._refusal(resp, outcome.rcode, outcome.ede), tcp))
        if not outcome:
            return Answer(_pack(resp, tcp))

        def finish(results: list[tuple[str, str]]) -> bytes:
            try:
                return _pack(self._finished(resp, outcome, results), tcp)
            except Exception:  # never raise into the caller's event loop
                return _bare(resp.id, resp.opcode << 11, SERVFAIL)

        return UpdateNeeded(outcome, finish)

    def _finished(self, template: _Response, ops: tuple[RecordOp, ...],
                  results: list[tuple[str, str]]) -> _Response:
        resp = replace(template)  # finish may be called more than once
        for status, value in results:
            if status == "ok":
                continue
            if status in REFUSALS:
                return self._refusal(resp, REFUSED, (EDE_PROHIBITED, str(value)))
            return self._refusal(resp, SERVFAIL, (EDE_OTHER, str(value)))
        if len(results) < len(ops):
            return self._refusal(resp, SERVFAIL, (EDE_OTHER, "the update was not completed"))
        return resp

    def _check_prerequisites(self, prereqs: tuple[WireRR, ...]) -> _Refusal | None:
        """RFC 2136 3.2, against the view; None when all hold."""
        wanted: dict[tuple[Labels, int], set[bytes]] = {}
        for rr in prereqs:
            relative = self._relative(rr.labels)
            if relative is None:
                return _Refusal(NOTZONE, (EDE_NOT_AUTHORITATIVE,
                                          "a prerequisite is outside the zone"))
            if rr.ttl != 0:
                return _Refusal(FORMERR)
            if rr.rclass in (C_ANY, C_NONE):
                if rr.rdata:
                    return _Refusal(FORMERR)
                exists = (self._name_in_use(relative) if rr.rtype == T_ANY
                          else self._rrset(relative, rr.rtype) is not None)
                if rr.rclass == C_ANY and not exists:
                    return _Refusal(NXDOMAIN if rr.rtype == T_ANY else NXRRSET)
                if rr.rclass == C_NONE and exists:
                    return _Refusal(YXDOMAIN if rr.rtype == T_ANY else YXRRSET)
            elif rr.rclass == C_IN:
                if rr.rtype not in (T_A, T_AAAA):
                    return _Refusal(NOTIMP, (EDE_NOT_SUPPORTED,
                                             "value prerequisites only for A and AAAA"))
                wanted.setdefault((lower_labels(relative), rr.rtype), set()).add(rr.rdata)
            else:
                return _Refusal(FORMERR)
        for (relative, rtype), rdatas in wanted.items():
            if self._rrset(relative, rtype) != rdatas:
                return _Refusal(NXRRSET)
        return None

    def _lookup(self, relative: Labels) -> Record | None:
        name = self._record_name(relative)
        return self.view.lookup(name) if name is not None else None

    def _name_in_use(self, relative: Labels) -> bool:
        return not relative or self._lookup(relative) is not None

    def _rrset(self, relative: Labels, rtype: int) -> set[bytes] | None:
        """The RRset's RDATA for A and AAAA (a placeholder for the other
        types we serve), None when there is no such RRset."""
        if not relative:
            return {b""} if rtype in (T_SOA, T_NS) else None
        record = self._lookup(relative)
        if record is None:
            return None
        if rtype in (T_A, T_AAAA):
            addresses = record.ipv4 if rtype == T_A else record.ipv6
            return {ipaddress.ip_address(a).packed for a in addresses} or None
        return {b""} if rtype == T_TXT else None

    def _plan(self, updates: tuple[WireRR, ...],
              key: TsigKey) -> tuple[RecordOp, ...] | _Refusal:
        """Prescan (RFC 2136 3.4.1) and translate the updates into ops, or
        refuse them all."""
        wanted: dict[str, tuple[set[str], set[str]]] = {}
        current: dict[str, Record | None] = {}
        for rr in updates:
            problem = self._prescan(rr)
            if problem is not None:
                return problem
            name = self._record_name(self._relative(rr.labels) or ())
            if name is None or not self._granted(key, name):
                shown = b".".join(rr.labels).decode("ascii", "replace")
                return _Refusal(REFUSED, (EDE_PROHIBITED,
                                          f"key {key.name!r} may not change {shown!r}"))
            if name not in current:
                current[name] = self.view.lookup(name)
                record = current[name]
                if record is not None and record.owner != key.owner:
                    return _Refusal(REFUSED, (EDE_PROHIBITED,
                                              f"name {name!r} is owned by another key"))
                wanted[name] = (set(record.ipv4), set(record.ipv6)) if record else (set(), set())
            v4, v6 = wanted[name]
            _apply_update(rr, v4, v6)
        ops = []
        for name, (v4, v6) in wanted.items():
            record = current[name]
            if record is not None and (set(record.ipv4), set(record.ipv6)) == (v4, v6):
                continue
            if not v4 and not v6:
                if record is not None:
                    ops.append(RecordOp("record_delete", name, owner=key.owner))
                continue
            try:
                ipv4, ipv6 = split_addresses(sorted(v4) + sorted(v6))
            except InvalidRecord as exc:
                return _Refusal(REFUSED, (EDE_PROHIBITED, str(exc)))
            ops.append(RecordOp("record_set", name, ipv4=ipv4, ipv6=ipv6,
                                txt=record.txt if record else (), owner=key.owner,
                                seq=(record.seq if record else 0) + 1))
        return tuple(ops)

    def _prescan(self, rr: WireRR) -> _Refusal | None:
        if self._relative(rr.labels) is None:
            return _Refusal(NOTZONE, (EDE_NOT_AUTHORITATIVE, "an update is outside the zone"))
        if rr.rclass == C_IN:
            if rr.rtype in META_TYPES:
                return _Refusal(FORMERR)
            if rr.rtype not in (T_A, T_AAAA):
                return _Refusal(REFUSED, (EDE_NOT_SUPPORTED,
                                          "only A and AAAA records can be added"))
        elif rr.rclass == C_ANY:
            if rr.ttl != 0 or rr.rdata or (rr.rtype in META_TYPES and rr.rtype != T_ANY):
                return _Refusal(FORMERR)
        elif rr.rclass == C_NONE:
            if rr.ttl != 0 or rr.rtype in META_TYPES:
                return _Refusal(FORMERR)
        else:
            return _Refusal(FORMERR)
        if rr.rclass != C_ANY and rr.rtype in (T_A, T_AAAA):
            if len(rr.rdata) != (4 if rr.rtype == T_A else 16):
                return _Refusal(FORMERR)
        return None

    def _granted(self, key: TsigKey, name: str) -> bool:
        grants = key.grants or (self._default_grant(key),)
        for grant in grants:
            if grant == name or (grant.startswith("*.") and name.endswith(grant[1:])):
                return True
        return False

    def _default_grant(self, key: TsigKey) -> str:
        suffix = "." + self.zone[:-1]
        return key.name[:-len(suffix)] if key.name.endswith(suffix) else key.name


def _apply_update(rr: WireRR, v4: set[str], v6: set[str]) -> None:
    """One prescanned update RR applied to a name's address sets."""
    if rr.rclass == C_ANY:
        if rr.rtype in (T_ANY, T_A):
            v4.clear()
        if rr.rtype in (T_ANY, T_AAAA):
            v6.clear()
        return
    if rr.rtype not in (T_A, T_AAAA):
        return  # deleting a type the store does not keep: nothing to do
    target = v4 if rr.rtype == T_A else v6
    address = str(ipaddress.ip_address(rr.rdata))
    if rr.rclass == C_IN:
        target.add(address)
    else:
        target.discard(address)
