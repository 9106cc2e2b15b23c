"""The zone's name servers: the names of the apex NS set and the addresses
they resolve to in the zone.

Pure: no sockets, no state. The launcher builds the set once, from
``--ns NAME=ADDR`` (:func:`name_servers`) or else one name per front end at
``--bind`` (:func:`default_name_servers`: ``ns1`` .. ``nsN``, since every
front end listens on that address), and hands the same tuple to every
front end in its settings. Its contract, for everyone who reads it:

* :class:`~mydns_lab.dns.answers.DnsFrontEnd` answers NS at the apex with
  every name in order (their addresses in the additional section when they
  fit), makes the first the SOA MNAME, and answers A and AAAA of each name
  with its addresses (the zone TTL), before and instead of any stored
  record of that name;
* the names are reserved: a JSON Put of one is refused
  (:class:`mydns_lab.admission.Admission`, ``Code: reserved``) and so is
  an RFC 2136 update touching one (:func:`mydns_lab.dns.update.plan_update`),
  so a client can never make the zone's own servers point elsewhere. A
  record stored under such a name before it was one stays in the store,
  unanswered, until ``--expire`` releases it.

Every name is inside the zone, below its apex: its address is the zone's
own data, which this server answers authoritatively, so checkers find the
NS names' addresses where they look (Zonemaster's
IN_BAILIWICK_ADDR_MISMATCH and TOTAL_NAME_MISMATCH came from an NS name
without one).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Sequence

from ..records import InvalidRecord
from .wire import Zone

__all__ = ["NameServer", "DEFAULT_NAME_SERVERS", "name_servers", "default_name_servers"]


@dataclass(frozen=True, slots=True)
class NameServer:
    """One name of the apex NS set. ``name`` is relative to the zone in
    stored form (``ns1``: :func:`mydns_lab.records.normalize_name`), so it
    meets stored records where they are looked up; ``ipv4`` and ``ipv6``
    are its addresses in canonical text form (at least one)."""

    name: str
    ipv4: tuple[str, ...] = ()
    ipv6: tuple[str, ...] = ()


DEFAULT_NAME_SERVERS = (NameServer("ns1", ("127.0.0.1",)),)
"""What one front end at the default ``--bind`` publishes."""


def name_servers(zone: Zone, given: Sequence[tuple[str, str]]) -> tuple[NameServer, ...]:
    """The NS set of ``--ns NAME=ADDR`` entries ``given`` as ``(NAME, ADDR)``,
    in the order given. NAME is relative to ``zone``, or absolute with a
    trailing dot, and must be inside the zone below its apex; a NAME given
    again adds an address (one A and one AAAA for a dual-stack server) and
    keeps its first place. Raises ValueError naming the bad entry."""
    if not given:
        raise ValueError("no name servers given")
    found: dict[str, tuple[list[str], list[str]]] = {}
    for name, address in given:
        entry = f"--ns {name}={address}"
        relative = _relative_name(zone, name, entry)
        ip = _address(address, entry)
        if ip.is_unspecified:
            raise ValueError(f"{entry}: {ip} is no address a resolver can be sent to; give the "
                             "address clients reach this host at")
        v4, v6 = found.setdefault(relative, ([], []))
        family = v4 if ip.version == 4 else v6
        if str(ip) in family:
            raise ValueError(f"{entry}: given twice")
        family.append(str(ip))
    return tuple(NameServer(name, tuple(v4), tuple(v6)) for name, (v4, v6) in found.items())


def default_name_servers(address: str, count: int) -> tuple[NameServer, ...]:
    """``ns1`` .. ``ns<count>``, one per front end, each at ``address`` (the
    ``--bind`` address every front end listens on). Raises ValueError when
    ``address`` is a wildcard (0.0.0.0, ``::``): a resolver cannot be sent
    there, so such a lab must name its servers with ``--ns``."""
    ip = _address(address, f"--bind {address}")
    if ip.is_unspecified:
        raise ValueError(f"--bind {ip} listens on every address, so the name servers ns1.. have "
                         "none to publish; pass --ns ns1=ADDR (repeatable) with the address "
                         "clients reach this host at")
    if count < 1:
        raise ValueError("a zone needs at least one name server")
    family = {"ipv4": (str(ip),)} if ip.version == 4 else {"ipv6": (str(ip),)}
    return tuple(NameServer(f"ns{k}", **family) for k in range(1, count + 1))


def _relative_name(zone: Zone, name: str, entry: str) -> str:
    """``name`` (relative to ``zone``, or absolute with a trailing dot) in
    stored form; ValueError starting with ``entry`` when it is not a name
    inside the zone below the apex."""
    absolute = name.strip() if name.strip().endswith(".") else f"{name.strip()}.{zone.name}"
    try:
        labels = Zone.of(absolute).labels
    except InvalidRecord as exc:
        raise ValueError(f"{entry}: not a name: {exc}") from None
    relative = zone.relative(labels)
    stored = Zone.record_name(relative) if relative else None
    if stored is None:
        raise ValueError(f"{entry}: the name must be inside the zone {zone.name}, below its "
                         "apex, since this server answers its address")
    return stored


def _address(text: str, entry: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        raise ValueError(f"{entry}: expected an IPv4 or IPv6 address such as 192.0.2.53 "
                         "or 2001:db8::53") from None
    return ip
