"""DNS records as the store keeps them, and the rules for what may go in.

Every name and address is checked here before it reaches the log, and again
by the state machine (the authority), so a bad upload is refused with a
reason and changes nothing. Pure: only the standard ``ipaddress``,
``hashlib``, ``hmac`` and ``functools`` modules.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import re
from dataclasses import dataclass, replace
from typing import Mapping

from .protocol import Outcome, Record, RecordOp, Status

__all__ = ["InvalidRecord", "MAX_SEQ", "OPEN_OWNER", "KEY_OWNER_PREFIX", "normalize_name",
           "split_addresses", "check_txt", "checked_op", "token_hash", "json_owner",
           "is_key_owner", "same_owner", "put_mac", "Change", "decide_change", "SignedState",
           "accept_signed", "replayed"]

MAX_NAME_OCTETS = 253
MAX_ADDRESSES_PER_FAMILY = 8
"""Addresses of each family a name may hold: eight A and eight AAAA keep
every answer of the zone small, so a spoofed query gains an attacker little
(reflection and amplification); more hosts should use more names."""
MAX_TXT_OCTETS = 255
MAX_SEQ = 2**63 - 1
"""The largest sequence number: a signed 64-bit integer, which the codec
(msgpack) and every client language carry."""
OPEN_OWNER = "open"
"""The owner of an open name: claimed by a Put without a token, and
updated by any later one (the original's protocol). Not a SHA-256 in hex,
so no token or key maps to it."""
KEY_OWNER_PREFIX = "key:"
"""How the owner of a name written through a TSIG key starts
(:func:`mydns_lab.dns.tsig.tsig_owner`); a token's owner is a bare hash. A
key's owner is derived from the key's name, which is no secret, and a
signed Put is keyed by its name's owner: the front end takes none for a
key's name, whether or not the key is still in the keys file."""
_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
"""One label, either case; matched with ``fullmatch`` (``$`` would let a
trailing newline in) before lower-casing (``str.lower`` makes the Kelvin
sign a "k")."""


class InvalidRecord(ValueError):
    """A name, address or text that may not be stored; the message says why."""


def normalize_name(name: object) -> str:
    """The stored form of a name relative to the zone: lower-case labels of
    ``a-z 0-9 -``, 1-63 octets each, not starting or ending with ``-``, at
    most 253 octets in all. A trailing dot is accepted and dropped."""
    if not isinstance(name, str):
        raise InvalidRecord(f"a name must be a string, not {type(name).__name__}")
    given = name.strip().removesuffix(".")
    if not given:
        raise InvalidRecord("the name is empty")
    if len(given) > MAX_NAME_OCTETS:
        raise InvalidRecord(f"name is {len(given)} octets long; at most {MAX_NAME_OCTETS} allowed")
    for label in given.split("."):
        if not label:
            raise InvalidRecord(f"name {given.lower()!r} has an empty label")
        if len(label) > 63:
            raise InvalidRecord(f"label {label[:20].lower()!r}... is {len(label)} octets; "
                                "at most 63 allowed")
        if not _LABEL.fullmatch(label):
            raise InvalidRecord(f"label {label.lower()!r} may hold only a-z, 0-9 and '-', "
                                "and may not start or end with '-'")
    return given.lower()


def split_addresses(addresses: object) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Parse addresses into (IPv4, IPv6) tuples in canonical text form,
    sorted and without repeats. Accepts one string or a list of strings;
    at most MAX_ADDRESSES_PER_FAMILY of each family (the one place the
    cap is checked: the JSON front end, RFC 2136 updates and the state
    machine all come through here)."""
    if isinstance(addresses, str):
        addresses = [addresses]
    if not isinstance(addresses, (list, tuple)):
        raise InvalidRecord(f"addresses must be a string or a list, not {type(addresses).__name__}")
    if not addresses:
        return (), ()
    if len(addresses) == 1 and isinstance(addresses[0], str):
        # Most uploads, and every family of a checked op: no set, no sort.
        version, _, canonical = _address(addresses[0].strip())
        return ((canonical,), ()) if version == 4 else ((), (canonical,))
    if len(addresses) > 4 * MAX_ADDRESSES_PER_FAMILY:  # bounds the parsing; repeats are merged
        raise InvalidRecord(f"{len(addresses)} addresses given; at most "
                            f"{MAX_ADDRESSES_PER_FAMILY} IPv4 and {MAX_ADDRESSES_PER_FAMILY} "
                            "IPv6 allowed")
    v4: set[tuple[int, str]] = set()
    v6: set[tuple[int, str]] = set()
    for text in addresses:
        if not isinstance(text, str):
            raise InvalidRecord(f"an address must be a string, not {type(text).__name__}")
        version, value, canonical = _address(text.strip())
        (v4 if version == 4 else v6).add((value, canonical))
    for family, found in (("IPv4", v4), ("IPv6", v6)):
        if len(found) > MAX_ADDRESSES_PER_FAMILY:
            raise InvalidRecord(f"{len(found)} {family} addresses given; at most "
                                f"{MAX_ADDRESSES_PER_FAMILY} allowed per name")
    return tuple(text for _, text in sorted(v4)), tuple(text for _, text in sorted(v6))


MAX_ADDRESS_TEXT = 64
"""The longest text :func:`split_addresses` remembers the parse of (an IPv6
address with a zone index fits); longer text is parsed every time, so the
memory is bounded by ADDRESS_MEMORY entries of this size."""
ADDRESS_MEMORY = 4096


def _parse_address(text: str) -> tuple[int, int, str]:
    """(version, value, canonical text) of an IPv4 or IPv6 address; raises
    ValueError for anything else."""
    address = ipaddress.ip_address(text)
    return address.version, int(address), str(address)


_known_address = functools.lru_cache(maxsize=ADDRESS_MEMORY)(_parse_address)
""":func:`_parse_address`, remembered: a host uploads the same addresses again
and again, and the front end and then the leader check every upload (a
tenth of a front end's CPU went to ``ipaddress`` under load)."""


def _address(text: str) -> tuple[int, int, str]:
    """(version, value, canonical text) of one stripped address text, the
    parse remembered when the text is short; InvalidRecord for anything
    that is no address."""
    try:
        return _known_address(text) if len(text) <= MAX_ADDRESS_TEXT else _parse_address(text)
    except ValueError:
        raise InvalidRecord(f"{text[:60]!r} is not an IPv4 or IPv6 address") from None


def sender_address(source: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address of a request's sender, as its socket gave it (text):
    an IPv4 sender seen by a dual-stack socket (``::ffff:a.b.c.d``) is the
    IPv4 address it is. None for text that is no address."""
    try:
        address = ipaddress.ip_address(source)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def check_txt(txt: object) -> tuple[str, ...]:
    if isinstance(txt, str):
        txt = [txt]
    if not isinstance(txt, (list, tuple)) or not all(isinstance(t, str) for t in txt):
        raise InvalidRecord("TXT must be a string or a list of strings")
    for item in txt:
        if len(item.encode()) > MAX_TXT_OCTETS:
            raise InvalidRecord(f"a TXT string is over {MAX_TXT_OCTETS} octets")
    return tuple(txt)


def token_hash(token: str) -> str:
    """How a credential is stored and compared: SHA-256, hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def json_owner(token: str) -> str:
    """The owner of names claimed with a JSON token. The ``token:`` prefix
    keeps it apart from TSIG owners (``tsig:<key name>``): no token a client
    can send hashes to a TSIG key's owner."""
    return token_hash("token:" + token)


def is_key_owner(owner: str) -> bool:
    """Whether ``owner`` is a TSIG key's (see :data:`KEY_OWNER_PREFIX`)."""
    return owner.startswith(KEY_OWNER_PREFIX)


def same_owner(stored: str, claimant: str) -> bool:
    """Whether ``claimant`` (an update's owner) owns a record whose owner is
    ``stored``: they are equal, or ``claimant`` is a key's owner and
    ``stored`` its bare hash, as names written through a key were stored
    before :data:`KEY_OWNER_PREFIX` (the key's next write stores the
    prefixed form)."""
    return stored == claimant or (is_key_owner(claimant)
                                  and stored == claimant[len(KEY_OWNER_PREFIX):])


PUT_MAC_LABEL = "mydns-put-v1"
"""The first line of every signed Put's message, so the MAC of a Put is
never the MAC of anything else keyed the same way."""


def put_mac(owner: str, zone: str, name: str, addresses: list[str] | tuple[str, ...],
            seq: int) -> str:
    """The ``Mac`` of a signed JSON Put, in lower-case hex:
    HMAC-SHA256 keyed by the ASCII bytes of ``owner`` (``json_owner(token)``,
    the owner the store keeps for a name claimed with that token, so the
    front end verifies without the token) over the UTF-8 bytes of six
    lines joined by a newline (none after the last): ``mydns-put-v1``
    (:data:`PUT_MAC_LABEL`), ZONE, NAME, IPV4S, IPV6S and SEQ. That is
    the zone lower-case with one trailing dot, the name in
    stored form (:func:`normalize_name`), each family's addresses in
    canonical form, sorted, without repeats, joined by ``,`` (empty when
    none), and ``seq`` in decimal. No field can hold a newline or a comma,
    so no two uploads share a message. put.py and the front end both call
    this; a bad name or address raises :class:`InvalidRecord`."""
    ipv4, ipv6 = split_addresses(list(addresses))
    message = "\n".join((PUT_MAC_LABEL, zone.lower().rstrip(".") + ".", normalize_name(name),
                         ",".join(ipv4), ",".join(ipv6), str(int(seq))))
    return hmac.new(owner.encode("ascii"), message.encode(), hashlib.sha256).hexdigest()


def checked_op(op: RecordOp) -> RecordOp:
    """``op`` with its name, addresses and text in stored form; raises
    :class:`InvalidRecord` naming what is wrong."""
    if op.kind in ("record_list", "record_changes"):
        return op
    name = normalize_name(op.name)
    if op.kind != "record_set":
        return op if name == op.name else replace(op, name=name)
    if not isinstance(op.seq, int) or not 0 <= op.seq <= MAX_SEQ:
        raise InvalidRecord(f"the sequence number must be an integer from 0 to {MAX_SEQ}")
    ipv4, wrong_family = split_addresses(list(op.ipv4))
    if wrong_family:
        raise InvalidRecord(f"{wrong_family[0]} is not an IPv4 address; split addresses by family")
    wrong_family, ipv6 = split_addresses(list(op.ipv6))
    if wrong_family:
        raise InvalidRecord(f"{wrong_family[0]} is not an IPv6 address; split addresses by family")
    if not ipv4 and not ipv6:
        raise InvalidRecord(f"no address given for {name!r}")
    txt = check_txt(list(op.txt))
    if (name, ipv4, ipv6, txt) == (op.name, op.ipv4, op.ipv6, op.txt):
        return op  # in stored form already (checked by the front end): no copy
    return replace(op, name=name, ipv4=ipv4, ipv6=ipv6, txt=txt)


# --- the rules of a record change, shared by every store ---------------------------------

@dataclass(frozen=True, slots=True)
class Change:
    """What a record operation does to the name it names, as
    :func:`decide_change` rules: ``status`` (a :class:`Status`) with, when
    refused, ``reason`` in words for people; when accepted, the ``outcome``
    and either the record to store (``stored``) or ``removed`` (the name
    is released), or neither (nothing to do, e.g. an expiry of a name
    refreshed since)."""

    status: str
    reason: str = ""
    outcome: str = Outcome.NONE
    stored: Record | None = None
    removed: bool = False


def decide_change(op: RecordOp, current: Record | None, zone_size: int, time_ms: int) -> Change:
    """The one rule book of record changes, for the embedded store's state
    machine and the etcd store's transactions alike: ``op`` (already
    :func:`checked_op`) against the name's ``current`` record, with the
    zone holding ``zone_size`` names, at ``time_ms`` (the time the change
    is stamped with). Pure: the caller applies the answer atomically with
    the reads it was decided from.

    Owners: a token's or a key's hash, or :data:`OPEN_OWNER` for an open
    name, which any open Put may update and no owner may take (an attacker
    who could lock a name would do more harm than one who can only point
    it elsewhere until its next refresh)."""
    if op.kind == "record_expire":
        # Released only if still unrefreshed at the cutoff: front ends racing
        # to expire a name, or an upload racing them, are all safe.
        if current is None or current.updated_ms >= op.older_than_ms:
            return Change(Status.OK)
        return Change(Status.OK, outcome=Outcome.EXPIRED, removed=True)
    if op.kind not in ("record_set", "record_delete"):
        return Change(Status.ERROR, f"{op.kind} is not a write")
    if not op.owner:
        return Change(Status.ERROR, f"changing {op.name!r} needs the owner's token")
    stored = Record(op.name, op.ipv4, op.ipv6, op.txt, op.owner, op.seq, time_ms)
    if current is None:
        if op.kind == "record_delete":
            return Change(Status.ERROR, f"no such name {op.name!r}")
        if 0 < op.max_names <= zone_size:
            return Change(Status.ZONE_FULL, f"the zone holds its limit of {op.max_names} names "
                                             f"(--max-names); {op.name!r} was not claimed")
        return Change(Status.OK, outcome=Outcome.CLAIMED, stored=stored)
    if not same_owner(current.owner, op.owner):
        if current.owner == OPEN_OWNER:
            return Change(Status.OPEN, f"name {op.name!r} is open: any Put without a token "
                                        "updates it, so no token or key can take it; choose "
                                        "another name, or wait until it expires unrefreshed")
        return Change(Status.OWNED, f"name {op.name!r} is owned by another key; pass the "
                                     "token that claimed it or choose another name")
    if op.kind == "record_delete":
        return Change(Status.OK, outcome=Outcome.DELETED, removed=True)
    if op.seq < current.seq:
        return Change(Status.STALE, f"stale upload for {op.name!r}: sequence {op.seq} is "
                                     f"older than the stored {current.seq}; nothing changed")
    return Change(Status.OK, outcome=Outcome.UPDATED, stored=stored)


SignedState = tuple[int, Mapping[str, int]]
"""A TSIG key's replay state: the latest Time Signed accepted, and for each
message (its MAC) accepted at that time the last part applied."""


def accept_signed(last: SignedState | None, op: RecordOp) -> SignedState | None:
    """RFC 8945 5.2.3 for an op stamped from a TSIG-signed UPDATE: the key's
    new replay state when ``op`` is accepted against ``last``, None when it
    is a replay. A store checks it before any other rule but validation,
    and keeps the new state even when the op is then refused for another
    reason: an authentic message uses up its time.

    Accepted: a Time Signed newer than the key's last; or the same one from
    a message (MAC) not seen yet (two updates signed in one second), or the
    next part of a message already accepted (one UPDATE plans one op per
    name, all with its Time Signed and MAC, parts 0, 1, ... run in order).
    Refused: an older Time Signed, and a part already seen, which is what a
    replay of an accepted message starts with (its first op is part 0
    again)."""
    if last is None or op.tsig_time > last[0]:
        return op.tsig_time, {op.tsig_mac: op.tsig_part}
    time_s, parts = last
    if op.tsig_time < time_s or parts.get(op.tsig_mac, -1) >= op.tsig_part:
        return None
    return time_s, {**parts, op.tsig_mac: op.tsig_part}


def replayed(op: RecordOp) -> Change:
    """The refusal of a signed op :func:`accept_signed` found replayed."""
    return Change(Status.REPLAYED, f"the update of {op.name!r} signed by key {op.tsig_key!r} "
                                    f"at {op.tsig_time} was taken before, or a newer one from "
                                    "that key was (a replay, or an old update arriving late); "
                                    "sign a new one")
