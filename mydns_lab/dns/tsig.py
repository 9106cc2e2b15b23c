"""TSIG (RFC 8945, HMAC-SHA256 only): the keys a front end accepts, checking
a request's signature and signing the response.

Pure but for :meth:`KeyRing.load`, which reads the keys file: no sockets,
no clock (the caller passes ``now_s``). The DNS front end
(:mod:`mydns_lab.dns.answers`) calls :func:`verify_request` with a request that
:func:`mydns_lab.dns.wire.edns_and_tsig` found a TSIG RR in, and gets back a
:class:`Signer`, which it keeps until the response is packed: then
:meth:`Signer.rr_size` reserves room for the TSIG RR and :meth:`Signer.sign`
appends it, last. MACs are the full 32 bytes; the fudge is checked against
``now_s``, and a fudge above :data:`TSIG_FUDGE_S` (300 s) counts as 300 s:
the signer chooses the fudge (up to 65,535 s), and every second of it is a
second a captured message could be replayed. Errors: an unknown key or
another algorithm is BADKEY and a wrong MAC BADSIG (both answered
unsigned), a time off by more than the fudge BADTIME (signed).

**Replays** (RFC 8945 5.2.3). A signed UPDATE is accepted once. The
front end keeps the MACs of the UPDATEs it verified while they could still
pass the time check (:class:`SeenMacs`), a cheap first line; the authority
is the record store, which refuses an op whose Time Signed is older than
the last it accepted for the key, or that belongs to a message it already
took (:meth:`mydns_lab.raftkv.KVStateMachine.accept_signed`; the front
end stamps every op it plans with the key, Time Signed and MAC, see
:mod:`mydns_lab.dns.update`). Either way the answer is NOTAUTH with TSIG
error BADTIME, signed (:meth:`Signer.with_error`). BADTIME because that
is 5.2.3's answer: a server that caches the most recent Time Signed of a
key should answer BADTIME to a message with an earlier one. We give it to
the same message seen again too (an equal Time Signed and MAC: a replay
inside the window, the attack the time check is there to stop); no other
error fits (BADSIG says the MAC is wrong and sends users after their key),
and a BADTIME answer carries our clock in Other Data, all a client whose
clock is really off needs.

**Ownership.** Names written through TSIG are owned by ``"key:" +
token_hash("tsig:" + key name)`` (:func:`tsig_owner`): a name claimed with
a JSON token cannot be changed through TSIG nor the reverse, and rotating a
key's secret keeps its names. The owner is derived from the key's *name*,
so JSON tokens are hashed under another prefix
(:func:`mydns_lab.records.json_owner`): no JSON token maps to it, and
the ``key:`` mark tells the front end that no signed Put may change the
name (:data:`mydns_lab.records.KEY_OWNER_PREFIX`).

**Keys file** (:meth:`KeyRing.load`)::

    # name      secret (base64, >= 16 bytes)                   granted names
    laptop      kJz0bDqN8p3D4fmvRIS3C5QvYtGWvqkTvdv7KxjCgGE=
    lab-admin   pO9xW2kqkR1ZkH1vJ0sV3p6yq3ZkQ8m2m8K9qJb3l2c=   gpu1.lab *.lab

One key a line: its TSIG name (case-insensitive, trailing dot optional), its
HMAC-SHA256 secret in base64 (``tsig-keygen`` or ``openssl rand -base64
32``), then the names it may change, relative to the zone; ``*.x`` grants
every name below ``x``. Without granted names a key may change the name
equal to its own, with the zone suffix removed if it has one. ``#`` starts a
comment. A bad line raises :class:`KeyFileError` naming the line.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import heapq
import re
import struct
from dataclasses import dataclass
from typing import Iterable

from ..records import KEY_OWNER_PREFIX, InvalidRecord, normalize_name, token_hash
from .wire import C_ANY, T_TSIG, Labels, WireError, WireRR, lower_labels, read_name, wire_name

__all__ = ["KeyFileError", "TsigKey", "KeyRing", "TsigFields", "Signer", "SeenMacs",
           "tsig_owner", "parse_tsig_rdata", "tsig_digest", "verify_request", "TSIG_FUDGE_S",
           "BADSIG", "BADKEY", "BADTIME"]

TSIG_FUDGE_S = 300       # RFC 8945 recommends 300 s; also the most we accept from a request
SEEN_MACS_MAX = 100_000  # the front end's replay cache; the store's check does not depend on it
MIN_SECRET_BYTES = 16
BADSIG, BADKEY, BADTIME = 16, 17, 18
HMAC_SHA256 = (b"hmac-sha256",)
TSIG_OWNER_PREFIX = "tsig:"
_KEY_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")


def tsig_owner(key_name: str) -> str:
    """The owner of names created through the TSIG key ``key_name``:
    KEY_OWNER_PREFIX and a hash of its name."""
    return KEY_OWNER_PREFIX + token_hash(TSIG_OWNER_PREFIX + key_name.lower().rstrip("."))


# --- keys ---------------------------------------------------------------------------


class KeyFileError(ValueError):
    """A keys file that cannot be used; the message names the line."""


@dataclass(frozen=True, slots=True)
class TsigKey:
    """One HMAC-SHA256 key. ``name`` is lower-case without a trailing dot;
    ``grants`` holds names relative to the zone (``*.x``: anything below
    ``x``); empty means the key's own name."""

    name: str
    secret: bytes
    grants: tuple[str, ...] = ()

    @property
    def labels(self) -> Labels:
        return tuple(part.encode() for part in self.name.split("."))

    @property
    def owner(self) -> str:
        return tsig_owner(self.name)

    def grants_name(self, name: str, zone: str) -> bool:
        """Whether this key may change ``name`` (stored form, relative to
        ``zone``, which ends in a dot): its grants (``*.x`` is anything
        below ``x``), or without grants the name equal to its own less the
        zone suffix."""
        suffix = "." + zone.rstrip(".")
        grants = self.grants or (self.name.removesuffix(suffix),)
        return any(grant == name or (grant.startswith("*.") and name.endswith(grant[1:]))
                   for grant in grants)


class KeyRing:
    """The TSIG keys a front end accepts, by name."""

    def __init__(self, keys: Iterable[TsigKey] = ()) -> None:
        self._keys: dict[str, TsigKey] = {}
        for key in keys:
            if key.name in self._keys:
                raise ValueError(f"two keys are named {key.name!r}")
            self._keys[key.name] = key

    def get(self, name: str) -> TsigKey | None:
        return self._keys.get(name.lower().rstrip("."))

    def __len__(self) -> int:
        return len(self._keys)

    def key_granting(self, name: str, zone: str) -> TsigKey | None:
        """A key that may change ``name`` (see :meth:`TsigKey.grants_name`),
        or None: such a name is reserved for its keys."""
        return next((k for k in self._keys.values() if k.grants_name(name, zone)), None)

    @classmethod
    def load(cls, path: str) -> KeyRing:
        """Read a keys file (format in the module doc)."""
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyFileError(f"cannot read keys file {path}: {exc}") from None
        return cls.parse(text, source=str(path))

    @classmethod
    def parse(cls, text: str, source: str = "<keys>") -> KeyRing:
        keys: list[TsigKey] = []
        seen: set[str] = set()
        for number, line in enumerate(text.splitlines(), start=1):
            words = line.split("#", 1)[0].split()
            if not words:
                continue
            try:
                key = _parse_key_line(words)
            except ValueError as exc:
                raise KeyFileError(f"{source} line {number}: {exc}; expected "
                                   "'name base64-secret [granted-name ...]'") from None
            if key.name in seen:
                raise KeyFileError(f"{source} line {number}: key {key.name!r} is defined twice")
            seen.add(key.name)
            keys.append(key)
        return cls(keys)


def _parse_key_line(words: list[str]) -> TsigKey:
    if len(words) < 2:
        raise ValueError("a key needs a name and a secret")
    name = words[0].lower().rstrip(".")
    if not name or len(name) > 253 or not all(_KEY_LABEL.match(p) for p in name.split(".")):
        raise ValueError(f"{words[0]!r} is not a valid key name")
    try:
        secret = base64.b64decode(words[1], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the secret is not valid base64") from None
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"the secret is {len(secret)} bytes; use at least {MIN_SECRET_BYTES} "
                         "(for example: openssl rand -base64 32)")
    grants = []
    for word in words[2:]:
        try:
            if word.startswith("*."):
                grants.append("*." + normalize_name(word[2:]))
            else:
                grants.append(normalize_name(word))
        except InvalidRecord as exc:
            raise ValueError(f"granted name {word!r}: {exc}") from None
    return TsigKey(name, secret, tuple(grants))


# --- signatures -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TsigFields:
    """The RDATA of a TSIG RR (RFC 8945 4.2)."""

    algorithm: Labels
    time_signed: int
    fudge: int
    mac: bytes
    original_id: int
    error: int
    other: bytes


def parse_tsig_rdata(data: bytes, record: WireRR) -> TsigFields:
    """The fields of the TSIG RR ``record``, read from the message ``data``
    it was parsed from; raises :class:`WireError` when they do not fit."""
    algorithm, pos = read_name(data, record.rdata_start)
    end = record.rdata_start + len(record.rdata)
    if pos + 10 > end:
        raise WireError("TSIG RDATA is cut off")
    high, low, fudge, mac_size = struct.unpack_from("!HIHH", data, pos)
    pos += 10
    mac = data[pos:pos + mac_size]
    pos += mac_size
    if pos + 6 > end:
        raise WireError("TSIG RDATA is cut off")
    original_id, error, other_len = struct.unpack_from("!HHH", data, pos)
    pos += 6
    other = data[pos:pos + other_len]
    if pos + other_len != end:
        raise WireError("TSIG RDATA has the wrong length")
    return TsigFields(algorithm, (high << 32) | low, fudge, mac, original_id, error, other)


def tsig_digest(secret: bytes, key_labels: Labels, message: bytes, fields: TsigFields,
                request_mac: bytes = b"") -> bytes:
    """HMAC-SHA256 over (request MAC), ``message`` (without its TSIG RR, with
    its original ID and ARCOUNT) and the TSIG variables (RFC 8945 4.3)."""
    mac = hmac.new(secret, digestmod=hashlib.sha256)
    if request_mac:
        mac.update(struct.pack("!H", len(request_mac)) + request_mac)
    mac.update(message)
    mac.update(wire_name(lower_labels(key_labels)) + struct.pack("!HI", C_ANY, 0))
    mac.update(wire_name(lower_labels(fields.algorithm)))
    mac.update(struct.pack("!HIHHH", fields.time_signed >> 32, fields.time_signed & 0xFFFFFFFF,
                           fields.fudge, fields.error, len(fields.other)) + fields.other)
    return mac.digest()


@dataclass(frozen=True, slots=True)
class Signer:
    """How to put a TSIG RR on a response: signed with ``key``, the
    keyring's key that verified the request, or without one unsigned (an
    empty MAC, for BADKEY and BADSIG). ``request_time`` is the request's
    Time Signed."""

    key_labels: Labels
    key: TsigKey | None
    request_mac: bytes
    time_signed: int
    error: int = 0
    other: bytes = b""
    request_time: int = 0

    def with_error(self, error: int, now_s: int) -> Signer:
        """This signer for an answer with the TSIG error ``error``, still
        signed with the key: BADTIME (RFC 8945 5.2.3) carries the request's
        Time Signed and, in Other Data, the server's clock ``now_s``."""
        other = struct.pack("!HI", now_s >> 32, now_s & 0xFFFFFFFF) if error == BADTIME else b""
        return Signer(self.key_labels, self.key, self.request_mac, self.request_time, error,
                      other, self.request_time)

    def rr_size(self) -> int:
        mac = 32 if self.key is not None else 0
        return (len(wire_name(self.key_labels)) + 10 + len(wire_name(HMAC_SHA256)) + 16
                + mac + len(self.other))

    def sign(self, body: bytes) -> bytes:
        (ident,) = struct.unpack_from("!H", body)
        (arcount,) = struct.unpack_from("!H", body, 10)
        fields = TsigFields(HMAC_SHA256, self.time_signed, TSIG_FUDGE_S, b"", ident,
                            self.error, self.other)
        mac = b""
        if self.key is not None:
            mac = tsig_digest(self.key.secret, self.key_labels, body, fields, self.request_mac)
        rdata = (wire_name(HMAC_SHA256)
                 + struct.pack("!HIHH", self.time_signed >> 32, self.time_signed & 0xFFFFFFFF,
                               TSIG_FUDGE_S, len(mac)) + mac
                 + struct.pack("!HHH", ident, self.error, len(self.other)) + self.other)
        rr = wire_name(self.key_labels) + struct.pack("!HHIH", T_TSIG, C_ANY, 0, len(rdata)) + rdata
        return body[:10] + struct.pack("!H", arcount + 1) + body[12:] + rr


def verify_request(packet: bytes, record: WireRR, keyring: KeyRing, now_s: int) -> Signer:
    """Check the TSIG RR ``record``, the last RR of the request ``packet``
    (RFC 8945 5.2), and say how to sign the response: its ``error`` is 0
    when the request is authentic, else BADKEY, BADSIG or BADTIME (the
    caller answers NOTAUTH). Raises :class:`WireError` when the RR itself is
    malformed (the caller answers FORMERR)."""
    fields = parse_tsig_rdata(packet, record)
    if record.rclass != C_ANY or record.ttl != 0:
        raise WireError("a TSIG RR must have class ANY and TTL 0")
    key_name = b".".join(record.labels).decode("ascii", "replace")
    key = keyring.get(key_name) if record.labels else None
    if key is None or lower_labels(fields.algorithm) != HMAC_SHA256:
        return Signer(record.labels, None, b"", now_s, BADKEY)
    arcount = struct.unpack_from("!H", packet, 10)[0]
    message = (struct.pack("!H", fields.original_id) + packet[2:10]
               + struct.pack("!H", arcount - 1) + packet[12:record.start])
    expected = tsig_digest(key.secret, record.labels, message, fields)
    if len(fields.mac) != len(expected) or not hmac.compare_digest(fields.mac, expected):
        return Signer(record.labels, None, b"", now_s, BADSIG)
    signer = Signer(key.labels, key, fields.mac, now_s, request_time=fields.time_signed)
    if abs(now_s - fields.time_signed) > min(fields.fudge, TSIG_FUDGE_S):
        return signer.with_error(BADTIME, now_s)
    return signer


class SeenMacs:
    """The MACs of the signed UPDATEs one front end verified, each kept
    while its Time Signed could still pass the time check (Time Signed +
    :data:`TSIG_FUDGE_S`; after that the check refuses it anyway): RFC 8945
    5.2.3's cache against replays, the front end's cheap first line. It
    forgets the oldest when full and knows nothing of the other front ends;
    the record store's check (:mod:`mydns_lab.dns.update`) covers both."""

    def __init__(self, max_entries: int = SEEN_MACS_MAX) -> None:
        self._max_entries = max_entries
        self._expiry: dict[tuple[str, bytes], int] = {}
        self._heap: list[tuple[int, tuple[str, bytes]]] = []  # (expiry, entry), soonest first

    def __len__(self) -> int:
        return len(self._expiry)

    def first_sight(self, key_name: str, mac: bytes, time_signed: int, now_s: int) -> bool:
        """Remember the message ``mac`` signed by ``key_name``; False when it
        was already remembered (a replay, or the client re-sending it)."""
        while self._heap and (self._heap[0][0] < now_s or len(self._heap) >= self._max_entries):
            _, entry = heapq.heappop(self._heap)
            del self._expiry[entry]
        entry = (key_name, mac)
        if entry in self._expiry:
            return False
        self._expiry[entry] = time_signed + TSIG_FUDGE_S
        heapq.heappush(self._heap, (time_signed + TSIG_FUDGE_S, entry))
        return True
