"""Whole DNS responses kept for the plain queries a front end answers most:
the fast path of :meth:`mydns_lab.dns.answers.DnsFrontEnd.handle`.

Pure: no sockets, no clock. The contract, all on one thread:

* :meth:`ResponseCache.reply` first, with the request and the view the
  full path would answer from: the response bytes and the question's type
  (for the caller's tally), or None;
* on None, the caller answers through the full path and, right after it
  (the view unchanged in between), offers the response with
  :meth:`ResponseCache.learn`, which keeps it only when it is safe to.

**Why a kept response is exact.** The full path's response to a request
that carries no TSIG is a function of the request's bytes after the ID, of
the transport's size limit and of the view (and of the front end's zone,
TTL and name servers, fixed for the life of its one cache; the SOA serial
is derived from the view's ``serial``); the ID is copied into the first
two bytes and nowhere else. So a response learnt for one request is, with
the ID patched, byte for byte the response to any later request whose bytes
after the ID are the same, while the view's ``serial`` (which rises with
every change) and the view itself are the same. Everything is forgotten
when either changes.

**Case.** Entries are found by the request's bytes after the ID with ASCII
letters lowered, so ``WwW.MyDnS.`` (0x20 randomisation) finds the entry of
``www.mydns.``. The response always carries the asker's question bytes. It
is served to a request whose name differs in case only when nothing after
the question depends on that case: every name there is the pointer 0xC00C
to the question name (A, AAAA and TXT answers, the OPT RR). Negative
answers carry the zone's SOA, whose names the full path compresses against
the question only where the case matches, so those are served only to the
same bytes; another case goes through the full path.

**What is kept.** Only a plain QUERY (QR clear, opcode 0) with one
uncompressed question whose type is not a meta type (ANY, AXFR, IXFR, OPT,
TSIG, TKEY, MAILA, MAILB), no answer or authority RRs, and either no
additional RR or one EDNS version 0 OPT without options; and only a
response that echoes that question and is not truncated. Anything else
(TSIG, UPDATE, EDNS options, several questions, malformed requests,
SERVFAIL from a bug) goes through the full path every time. At most
``max_entries`` per transport are kept; the oldest goes first.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Protocol

from .wire import (C_IN, F_OPCODE, F_QR, F_TC, HEADER_SIZE, MAX_NAME_OCTETS, META_TYPES, T_A,
                   T_AAAA, T_OPT, T_TXT)

__all__ = ["ResponseCache", "MAX_ENTRIES"]

MAX_ENTRIES = 8192       # per transport; a response is at most ~1.2 kB over UDP
POINTER_TO_QUESTION = b"\xc0\x0c"
NAME_START = HEADER_SIZE - 2  # where the question name starts in a message without its ID
OPT_RR_SIZE = 11         # root name, type, class, TTL, RDLENGTH 0


class _View(Protocol):
    serial: int


@dataclass(frozen=True, slots=True)
class _Entry:
    """One learnt response. Offsets are into ``request`` and ``response``,
    which both start after the ID; the question name is at the same place
    in both (the response echoes the question)."""

    request: bytes       # the request as learnt
    response: bytes      # the response to it
    qtype: int           # the question's type
    name_end: int        # offset just after the question name
    any_case: bool       # nothing after the question depends on the name's case


class ResponseCache:
    """Responses for one :class:`DnsFrontEnd`, valid for one view and serial."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._view: object = None
        self._serial: int | None = None
        self._entries: tuple[dict[bytes, _Entry], dict[bytes, _Entry]] = ({}, {})

    def __len__(self) -> int:
        return len(self._entries[0]) + len(self._entries[1])

    def reply(self, packet: bytes, tcp: bool, view: _View) -> tuple[bytes, int] | None:
        """The response to ``packet`` and its question's type when a
        response is kept for it, else None."""
        if view is not self._view or view.serial != self._serial:
            self._start(view)
            return None
        asked = packet[2:]
        entry = self._entries[tcp].get(asked.lower())
        if entry is None:
            return None
        learnt = entry.request
        if asked == learnt:  # the most common case: the very bytes learnt
            return packet[:2] + entry.response, entry.qtype
        end = entry.name_end
        if asked[:NAME_START] != learnt[:NAME_START] or asked[end:] != learnt[end:]:
            return None  # lowering made two different requests alike
        if not entry.any_case:
            return None  # only the name's case differs, and the answer depends on it
        response = entry.response
        return (packet[:2] + response[:NAME_START] + asked[NAME_START:end] + response[end:],
                entry.qtype)

    def learn(self, packet: bytes, tcp: bool, view: _View, response: bytes) -> None:
        """Keep ``response``, the full path's answer to ``packet`` from
        ``view``, if it is one that may be served again (see the module doc)."""
        if view is not self._view or view.serial != self._serial:
            self._start(view)
        end = _plain_query_name_end(packet)
        if end is None or not _echoes_question(packet, end, response):
            return
        entries = self._entries[tcp]
        key = packet[2:].lower()
        if key not in entries and len(entries) >= self.max_entries:
            del entries[next(iter(entries))]
        (qtype,) = struct.unpack_from("!H", packet, end)
        entries[key] = _Entry(packet[2:], response[2:], qtype, end - 2,
                              _names_only_point_at_question(response, end))

    def _start(self, view: _View) -> None:
        """Forget everything: the view or its serial changed."""
        self._view, self._serial = view, view.serial
        for entries in self._entries:
            entries.clear()


def _plain_query_name_end(packet: bytes) -> int | None:
    """Where the question name of a cacheable request ends, or None."""
    if len(packet) < HEADER_SIZE + 5:
        return None
    flags, qdcount, ancount, nscount, arcount = struct.unpack_from("!5H", packet, 2)
    if flags & (F_QR | F_OPCODE) or qdcount != 1 or ancount or nscount or arcount > 1:
        return None
    pos = HEADER_SIZE
    while True:
        if pos >= len(packet):
            return None
        length = packet[pos]
        if length == 0:
            break
        if length > 63:
            return None  # a pointer or another label type: the full path decides
        pos += 1 + length
    end = pos + 1
    if end - HEADER_SIZE > MAX_NAME_OCTETS or end + 4 > len(packet):
        return None
    (qtype,) = struct.unpack_from("!H", packet, end)
    if qtype in META_TYPES:
        return None
    after = end + 4
    if arcount == 0:
        return end if after == len(packet) else None
    if len(packet) - after != OPT_RR_SIZE or packet[after] != 0:
        return None
    rtype, _payload, ttl, rdlength = struct.unpack_from("!HHIH", packet, after + 1)
    if rtype != T_OPT or rdlength != 0 or (ttl >> 16) & 0xFF != 0:
        return None  # options, or an EDNS version we answer with BADVERS
    return end


def _echoes_question(packet: bytes, end: int, response: bytes) -> bool:
    """The response is an untruncated answer carrying the request's question."""
    if len(response) < end + 4 or response[:2] != packet[:2]:
        return False
    flags, qdcount = struct.unpack_from("!HH", response, 2)
    return (qdcount == 1 and not flags & F_TC
            and response[HEADER_SIZE:end + 4] == packet[HEADER_SIZE:end + 4])


def _names_only_point_at_question(response: bytes, end: int) -> bool:
    """Whether every RR after the question is an A, AAAA or TXT owned by the
    pointer 0xC00C, or the OPT RR: then no byte after the question depends
    on the case of the question name."""
    ancount, nscount, arcount = struct.unpack_from("!3H", response, 6)
    if nscount or arcount > 1:
        return False
    pos = end + 4
    for _ in range(ancount):
        if response[pos:pos + 2] != POINTER_TO_QUESTION or pos + 12 > len(response):
            return False
        rtype, rclass, _ttl, rdlength = struct.unpack_from("!HHIH", response, pos + 2)
        if rtype not in (T_A, T_AAAA, T_TXT) or rclass != C_IN:
            return False
        pos += 12 + rdlength
    if arcount:
        if response[pos:pos + 1] != b"\0" or pos + OPT_RR_SIZE > len(response):
            return False
        rtype, _payload, _ttl, rdlength = struct.unpack_from("!HHIH", response, pos + 1)
        if rtype != T_OPT:
            return False
        pos += OPT_RR_SIZE + rdlength
    return pos == len(response)
