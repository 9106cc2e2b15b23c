"""Reading DNS messages off the wire: bytes in, frozen records out.

Pure: no sockets, no clock, no state. :func:`parse_message` reads a whole
message and raises :class:`WireError` on anything malformed (trailing bytes
included); compression pointers must point backwards, so reading neither
recurses nor loops without bound. :func:`edns_and_tsig` then picks out a
request's OPT and TSIG records, enforcing where RFC 6891 and RFC 8945 allow
them. Names are tuples of raw labels (:data:`Labels`), case as sent;
:func:`lower_labels` is the one case-folding rule and :func:`wire_name` the
one (uncompressed) encoding; :class:`Zone` is the one mapping from a name
in a request to the name a record is stored under. The header layout (its
size and flag bits), the name length limit and the opcode, rcode, Extended
DNS Error, record type and class numbers live here, for every DNS module to
share.

**Why not dnslib's parser.** dnslib builds the replies
(:mod:`mydns_lab.dns.answers`), but requests are read here: dnslib follows
compression pointers by recursion (a long chain raises RecursionError),
refuses RRs with empty RDATA (which every RFC 2136 delete and prerequisite
has), and does not say where the TSIG RR starts, which the MAC needs.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from ..records import InvalidRecord, normalize_name

__all__ = ["WireError", "WireRR", "Question", "WireMessage", "Edns", "Labels", "Zone",
           "read_name", "parse_message", "question_type", "edns_and_tsig", "wire_name",
           "lower_labels"]

MAX_POINTER_HOPS = 127   # more than any 255-octet name needs
HEADER_SIZE = 12
MAX_NAME_OCTETS = 255    # wire form, length octets and the root label included
# header bits (the opcode is 4 bits at 0x7800)
F_QR, F_OPCODE, F_TC, F_RD = 0x8000, 0x7800, 0x0200, 0x0100

# types and classes
T_A, T_NS, T_SOA, T_HINFO, T_TXT, T_AAAA, T_OPT = 1, 2, 6, 13, 16, 28, 41
T_TKEY, T_TSIG, T_IXFR, T_AXFR, T_MAILB, T_MAILA, T_ANY = 249, 250, 251, 252, 253, 254, 255
C_IN, C_NONE, C_ANY = 1, 254, 255
META_TYPES = frozenset({T_OPT, T_TKEY, T_TSIG, T_IXFR, T_AXFR, T_MAILB, T_MAILA, T_ANY})

# opcodes and rcodes (the TSIG errors are in mydns_lab.dns.tsig)
QUERY, UPDATE = 0, 5
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
YXDOMAIN, YXRRSET, NXRRSET, NOTAUTH, NOTZONE, BADVERS = 6, 7, 8, 9, 10, 16
# Extended DNS Errors (RFC 8914): the EDNS option code and the info codes we use
OPT_EDE = 15
EDE_OTHER, EDE_PROHIBITED, EDE_NOT_AUTHORITATIVE, EDE_NOT_SUPPORTED = 0, 18, 20, 21

Labels = tuple[bytes, ...]

_LDH_LABEL = re.compile(rb"[A-Za-z0-9-]{1,63}")  # fullmatch: "$" lets a trailing newline in


class WireError(ValueError):
    """Bytes that are not a well-formed DNS message."""


@dataclass(frozen=True, slots=True)
class WireRR:
    """One resource record as read, with where it sits in the message."""

    labels: Labels
    rtype: int
    rclass: int
    ttl: int
    rdata: bytes
    start: int        # offset of the RR in the message
    rdata_start: int


@dataclass(frozen=True, slots=True)
class Question:
    labels: Labels
    qtype: int
    qclass: int


@dataclass(frozen=True, slots=True)
class WireMessage:
    id: int
    flags: int
    questions: tuple[Question, ...]
    answers: tuple[WireRR, ...]      # UPDATE: prerequisites
    authority: tuple[WireRR, ...]    # UPDATE: updates
    additional: tuple[WireRR, ...]


def read_name(data: bytes, offset: int) -> tuple[Labels, int]:
    """The name at ``offset`` and the offset just after it. Compression
    pointers must point before the segment that holds them, so every chain
    ends; names over 255 octets and other label types are refused."""
    labels: list[bytes] = []
    octets = 1
    pos = segment = offset
    after: int | None = None
    hops = 0
    while True:
        if pos >= len(data):
            raise WireError("a name runs past the end of the message")
        length = data[pos]
        if length & 0xC0 == 0xC0:
            if pos + 1 >= len(data):
                raise WireError("a compression pointer is cut off")
            target = ((length & 0x3F) << 8) | data[pos + 1]
            if after is None:
                after = pos + 2
            hops += 1
            if target >= segment or hops > MAX_POINTER_HOPS:
                raise WireError("a compression pointer does not point backwards")
            pos = segment = target
            continue
        if length & 0xC0:
            raise WireError(f"unknown label type 0x{length & 0xC0:02x}")
        if length == 0:
            return tuple(labels), (pos + 1 if after is None else after)
        octets += length + 1
        if octets > MAX_NAME_OCTETS:
            raise WireError(f"a name is longer than {MAX_NAME_OCTETS} octets")
        if pos + 1 + length > len(data):
            raise WireError("a label runs past the end of the message")
        labels.append(data[pos + 1:pos + 1 + length])
        pos += 1 + length


def _read_rr(data: bytes, offset: int) -> tuple[WireRR, int]:
    labels, pos = read_name(data, offset)
    if pos + 10 > len(data):
        raise WireError("a resource record is cut off")
    rtype, rclass, ttl, rdlength = struct.unpack_from("!HHIH", data, pos)
    end = pos + 10 + rdlength
    if end > len(data):
        raise WireError("RDATA runs past the end of the message")
    return WireRR(labels, rtype, rclass, ttl, data[pos + 10:end], offset, pos + 10), end


def parse_message(data: bytes) -> WireMessage:
    """Parse a whole message; raises :class:`WireError` on anything malformed,
    trailing bytes included."""
    if len(data) < HEADER_SIZE:
        raise WireError("shorter than a header")
    ident, flags, qdcount, ancount, nscount, arcount = struct.unpack_from("!6H", data)
    pos = HEADER_SIZE
    questions = []
    for _ in range(qdcount):
        labels, pos = read_name(data, pos)
        if pos + 4 > len(data):
            raise WireError("a question is cut off")
        qtype, qclass = struct.unpack_from("!HH", data, pos)
        questions.append(Question(labels, qtype, qclass))
        pos += 4
    sections: list[tuple[WireRR, ...]] = []
    for count in (ancount, nscount, arcount):
        records = []
        for _ in range(count):
            record, pos = _read_rr(data, pos)
            records.append(record)
        sections.append(tuple(records))
    if pos != len(data):
        raise WireError(f"{len(data) - pos} bytes after the last record")
    return WireMessage(ident, flags, tuple(questions), *sections)


def question_type(message: bytes) -> int | None:
    """The type of ``message``'s first question (a request's, or the one a
    response echoes), read without parsing the rest; None when there is no
    question or it cannot be read. Cheap enough for every answer the front
    end counts: a plain name is skipped label by label, and only one with
    a pointer or an unknown label type takes :func:`read_name`."""
    try:
        if len(message) < HEADER_SIZE or not (message[4] or message[5]):
            return None
        pos = HEADER_SIZE
        while 0 < (length := message[pos]) < 0x40:
            pos += length + 1
        if length:
            _, pos = read_name(message, HEADER_SIZE)
        else:
            pos += 1
        return int.from_bytes(message[pos:pos + 2]) if pos + 2 <= len(message) else None
    except (WireError, IndexError):
        return None


@dataclass(frozen=True, slots=True)
class Edns:
    """What a request's OPT record says: UDP payload size, version, DO bit."""

    payload: int
    version: int
    do: bool


def edns_and_tsig(msg: WireMessage) -> tuple[Edns | None, WireRR | None]:
    """The request's OPT and TSIG records; at most one each, OPT only in the
    additional section with the root name, TSIG only as its last record."""
    for record in msg.answers + msg.authority:
        if record.rtype in (T_OPT, T_TSIG):
            raise WireError("OPT or TSIG outside the additional section")
    opts = [r for r in msg.additional if r.rtype == T_OPT]
    tsigs = [i for i, r in enumerate(msg.additional) if r.rtype == T_TSIG]
    if len(opts) > 1 or (opts and opts[0].labels):
        raise WireError("more than one OPT record, or one not owned by the root")
    if tsigs and tsigs != [len(msg.additional) - 1]:
        raise WireError("TSIG is not the last record")
    edns = None
    if opts:
        opt = opts[0]
        edns = Edns(opt.rclass, (opt.ttl >> 16) & 0xFF, bool(opt.ttl & 0x8000))
    return edns, (msg.additional[-1] if tsigs else None)


def wire_name(labels: Labels) -> bytes:
    """``labels`` as an uncompressed wire name (what TSIG MACs cover)."""
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\0"


def lower_labels(labels: Labels) -> Labels:
    """``labels`` in ASCII lower case: DNS names compare case-insensitively."""
    return tuple(label.lower() for label in labels)


@dataclass(frozen=True, slots=True)
class Zone:
    """The zone a front end serves. Queries and updates both map a name in
    a request to a stored record name through it, so the two agree on what
    is in the zone and what a name is stored as."""

    name: str        # normalised, with the trailing dot: "mydns."
    labels: Labels   # the same, lower-case labels without the root

    @classmethod
    def of(cls, name: str) -> Zone:
        """The zone called ``name`` (any case, trailing dot optional);
        raises :class:`mydns_lab.records.InvalidRecord` for a bad name."""
        text = normalize_name(name) + "."
        return cls(text, tuple(p.encode() for p in text[:-1].split(".")))

    def relative(self, labels: Labels) -> Labels | None:
        """``labels`` without the zone suffix (``()`` for the apex); None
        when the name is outside the zone."""
        n = len(self.labels)
        if len(labels) < n or lower_labels(labels[len(labels) - n:]) != self.labels:
            return None
        return labels[:len(labels) - n]

    @staticmethod
    def record_name(relative: Labels) -> str | None:
        """The stored form of a relative name (:func:`mydns_lab.records.normalize_name`),
        or None if no record can have it (the apex included)."""
        if not relative or not all(_LDH_LABEL.fullmatch(label) for label in relative):
            return None
        try:
            return normalize_name(b".".join(relative).decode("ascii"))
        except InvalidRecord:
            return None
