"""Response rate limiting (RRL) for DNS over UDP, as BIND's ``rate-limit``
and Knot's ``mod-rrl`` do it: a spoofed query makes us answer the address
it forged, so a front end answering every datagram is a reflector. The
limit bounds what one client network can be sent.

Pure: no sockets, no clock. :mod:`mydns_lab.service.dnsfront` owns one
:class:`ResponseRateLimiter` per front end, calls :meth:`verdict` with each
UDP DNS request's source address and the monotonic time ``now_s`` *before*
answering it, and then answers (``SEND``), sends nothing (``DROP``) or sends
:func:`truncated_reply` (``SLIP``). TCP is never limited: a TCP client has
completed a handshake, so its address is not forged.

**The key.** One bucket per client network: the IPv4 /24 or the IPv6 /56
of the source (an IPv4 address seen by a dual-stack socket as
``::ffff:a.b.c.d`` counts as IPv4). BIND and Knot also key by the response
(the name and type asked, and whether it was an answer, NXDOMAIN or an
error); we do not, on purpose: the zone is small and its answers are small
(:data:`mydns_lab.records.MAX_ADDRESSES_PER_FAMILY`), so what matters is
the bandwidth one victim network receives, and a key by name would give
an attacker a fresh allowance for every random name it asks (BIND keys
NXDOMAIN by the zone to close that hole). One key also keeps the per-packet
cost at one dict lookup and a few operations. The price: many clients
behind one /24 (a resolver farm) share one allowance; put them in
``--trusted``.

**The rate.** A token bucket: ``rate`` responses at once, refilled at
``rate`` a second (so the window is one second: a network that stops
flooding is answered again within 1/rate s). Dropped and slipped responses
take no token, so a client whose network is flooded with forged queries
still gets up to ``rate`` answers a second among them, and every second
response over the limit ("slip 2", BIND's and Knot's default) is a
truncated reply without records (TC=1), no larger than the query, which
makes a real resolver ask again over TCP.

**Trusted sources** (``--trusted``) are never limited. **Memory** is
bounded: at most ``max_networks`` buckets and ``max_sources`` remembered
source addresses; beyond either, the oldest is forgotten (a forgotten
network starts again with a full bucket).
"""

from __future__ import annotations

import ipaddress
import struct
from collections import OrderedDict
from collections.abc import Container
from enum import Enum

from ..records import sender_address
from .wire import F_OPCODE, F_QR, F_RD, F_TC, QUERY, UPDATE

__all__ = ["Verdict", "ResponseRateLimiter", "network_key", "truncated_reply",
           "MAX_NETWORKS", "MAX_SOURCES", "SLIP"]

MAX_NETWORKS = 16_384
"""Client networks whose bucket a front end keeps."""
MAX_SOURCES = 65_536
"""Source addresses whose network (and trust) a front end remembers, so a
known source costs one dict lookup."""
SLIP = 2
"""Every SLIP-th response over the limit is sent truncated, the others dropped."""
IPV4_PREFIX, IPV6_PREFIX = 24, 56



class Verdict(Enum):
    SEND = "send"     # under the limit (or exempt): answer it
    DROP = "drop"     # over the limit: send nothing
    SLIP = "slip"     # over the limit: send truncated_reply(request)


class _Bucket:
    """One client network's allowance. ``live`` turns False when the
    limiter forgets the network, so a remembered source finds it anew."""

    __slots__ = ("tokens", "at_s", "over", "live")

    def __init__(self, tokens: float, at_s: float) -> None:
        self.tokens = tokens
        self.at_s = at_s
        self.over = 0        # responses over the limit so far (for the slip count)
        self.live = True


_EXEMPT = _Bucket(0.0, 0.0)
"""What a trusted source maps to: never limited, never forgotten."""


def network_key(source: str) -> str | None:
    """The bucket key of IP address ``source``: ``a.b.c.0/24`` or the /56
    of an IPv6 address, IPv4-mapped addresses as IPv4; None for a string
    that is no address."""
    address = sender_address(source)
    if address is None:
        return None
    prefix = IPV4_PREFIX if address.version == 4 else IPV6_PREFIX
    return str(ipaddress.ip_network((address, prefix), strict=False))


class ResponseRateLimiter:
    """Per-network response rate limit; see the module doc. ``rate`` is
    responses a second (at least 1; a front end with ``--rrl 0`` has no
    limiter), ``trusted`` answers ``source in trusted`` (a
    :class:`mydns_lab.admission.TrustedSources`)."""

    def __init__(self, rate: int, trusted: Container[str] = (), *, slip: int = SLIP,
                 max_networks: int = MAX_NETWORKS, max_sources: int = MAX_SOURCES) -> None:
        if rate < 1 or slip < 1 or max_networks < 1 or max_sources < 1:
            raise ValueError("rate, slip and the memory bounds must be at least 1")
        self.rate = float(rate)
        self.slip = slip
        self._trusted = trusted
        self._max_networks, self._max_sources = max_networks, max_sources
        self._networks: OrderedDict[str, _Bucket] = OrderedDict()
        self._sources: OrderedDict[str, _Bucket] = OrderedDict()

    def verdict(self, source: str, now_s: float) -> Verdict:
        """Whether a response to ``source`` may be sent at ``now_s``
        (seconds, monotonic), taking a token when it may."""
        bucket = self._sources.get(source)
        if bucket is None or not bucket.live:
            bucket = self._learn(source, now_s)
        if bucket is _EXEMPT:
            return Verdict.SEND
        elapsed_s = now_s - bucket.at_s
        if elapsed_s > 0:  # a clock that steps back refills nothing
            bucket.tokens = min(self.rate, bucket.tokens + elapsed_s * self.rate)
            bucket.at_s = now_s
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return Verdict.SEND
        bucket.over += 1
        return Verdict.SLIP if bucket.over % self.slip == 0 else Verdict.DROP

    def __len__(self) -> int:
        """Client networks tracked now."""
        return len(self._networks)

    def _learn(self, source: str, now_s: float) -> _Bucket:
        """The bucket of a source not remembered (or whose network was
        forgotten): exempt when trusted, else its network's, made full."""
        if source in self._trusted:
            bucket = _EXEMPT
        else:
            # Not an address (no socket gives one): all such share one bucket.
            key = network_key(source) or "?"
            found = self._networks.get(key)
            if found is None:
                found = self._networks[key] = _Bucket(self.rate, now_s)
                if len(self._networks) > self._max_networks:
                    _, forgotten = self._networks.popitem(last=False)
                    forgotten.live = False
            bucket = found
        self._sources[source] = bucket
        self._sources.move_to_end(source)
        if len(self._sources) > self._max_sources:
            self._sources.popitem(last=False)
        return bucket


def truncated_reply(request: bytes) -> bytes | None:
    """The slip: a reply to ``request`` with TC set, its question and no
    records (RD and opcode kept, RCODE NOERROR, no EDNS), never longer than
    the request; None when the request is no QUERY or UPDATE with one
    readable question (then nothing is sent)."""
    if len(request) < 12:
        return None
    ident, flags, qdcount = struct.unpack_from("!HHH", request)
    opcode = (flags & F_OPCODE) >> 11
    if flags & F_QR or opcode not in (QUERY, UPDATE) or qdcount != 1:
        return None
    end = _question_end(request)
    if end is None:
        return None
    reply_flags = F_QR | F_TC | (flags & (F_OPCODE | F_RD))
    return struct.pack("!6H", ident, reply_flags, 1, 0, 0, 0) + request[12:end]


def _question_end(packet: bytes) -> int | None:
    """Where the first question of ``packet`` ends: its name (labels, or
    ending in a pointer), type and class; None when it runs off the end."""
    at = 12
    while at < len(packet):
        length = packet[at]
        if length == 0:
            at += 1
            break
        if length >= 0xC0:
            at += 2
            break
        if length > 63:
            return None
        at += 1 + length
    else:
        return None
    at += 4
    return at if at <= len(packet) else None
