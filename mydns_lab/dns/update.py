"""RFC 2136 dynamic UPDATE: from a verified request to the record operations
it needs, or the one reason it is refused.

Pure: no sockets, no clock, no bytes written. The contract, all on one
thread:

* :class:`mydns_lab.dns.answers.DnsFrontEnd` reads the request, checks its
  EDNS version and TSIG (:func:`mydns_lab.dns.tsig.verify_request`), then
  calls :func:`plan_update` with the message, the key that signed it (None
  when unsigned) with the request's Time Signed and MAC, its
  :class:`~mydns_lab.dns.wire.Zone` and the
  :class:`RecordView` it answers from: the front end's own view, or the one
  its caller passed to ``handle_with_view``. Nothing here keeps a view:
  every function that reads records takes it as an argument.
* :func:`plan_update` returns the ops to run through the cluster in order
  (empty when nothing changes), or a :class:`Refusal`. It never writes.
* The caller runs the ops, stopping at the first failure, and hands the
  ``(status, value)`` of each op run to :func:`refusal_from_results`, which
  says how the update ended: None (done) or a :class:`Refusal`.

Turning a :class:`Refusal` into a response (rcode, Extended DNS Error,
signature) is the front end's, as is every other byte of the response.
Exceptions from ``view.lookup`` (a read-through view without a quorum)
pass through to the front end, which answers SERVFAIL.

**What is accepted.** Only TSIG-signed UPDATEs (the signature is checked
before :func:`plan_update`: unknown key or other algorithm NOTAUTH/BADKEY,
wrong MAC NOTAUTH/BADSIG, time off by more than the fudge NOTAUTH/BADTIME;
RFC 8945; and a replay, NOTAUTH/BADTIME: see "Replays" below). Unsigned:
REFUSED. Zone section not ``SOA IN``: FORMERR; not our
zone, or an RR outside it: NOTZONE. A name the key is not granted (see the
keys file in :mod:`mydns_lab.dns.tsig`), owned by another key or token, the
apex, a name of the zone's NS set (:mod:`mydns_lab.dns.nameservers`: their
addresses are the operator's, not any key's), or a type other than A/AAAA
being added: REFUSED.

**Prerequisites** (RFC 2136 sections 2.4 and 3.2) are all supported,
value-dependent ones for A and AAAA (NOTIMP for other types); they are
checked against the view when the request arrives, not atomically with the
write, and see the NS names as queries do (their configured addresses,
never a stored record).

**Updates** (section 3.4) may add an A/AAAA RR, delete one, delete an RRset
or delete every RRset of a name; deletes of types the store does not keep
are no-ops, and TTLs in the request are ignored (every answer uses the
front end's TTL). The store replaces a name's whole address set, so each
touched name becomes one ``record_set`` (keeping its TXT, ``seq`` = stored
seq + 1) or, when no address is left, one ``record_delete``. Names are
changed one op at a time: if a later op fails, earlier names stay changed.

**Replays** (RFC 8945 5.2.3). Every op carries the stamp of the request
that planned it: ``tsig_key`` (the key's name), ``tsig_time`` (its Time
Signed), ``tsig_mac`` (its MAC, hex) and ``tsig_part`` (0, 1, ... in the
order the ops run). The record store refuses, with ``Status.REPLAYED`` and
nothing changed, an op whose Time Signed is older than the last it accepted
for the key, or equal and of a message whose part it already saw
(:meth:`mydns_lab.raftkv.KVStateMachine.accept_signed`): so all the ops of
one request go through, and the same request again is refused at its first
op, whatever the store holds by then. A ``record_set``'s ``seq`` (stored +
1) orders nothing here; the stamp does, deletes included.
:func:`refusal_from_results` turns ``REPLAYED`` into NOTAUTH with TSIG
error BADTIME (:mod:`mydns_lab.dns.tsig` says why that error).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from typing import Mapping, Protocol, Sequence

from ..protocol import REFUSALS, Record, RecordOp, Status
from ..records import InvalidRecord, same_owner, split_addresses
from .nameservers import NameServer
from .tsig import BADTIME, TsigKey
from .wire import (C_ANY, C_IN, C_NONE, EDE_NOT_AUTHORITATIVE, EDE_NOT_SUPPORTED, EDE_OTHER,
                   EDE_PROHIBITED, FORMERR, META_TYPES, NOTAUTH, NOTIMP, NOTZONE, NXDOMAIN, NXRRSET,
                   REFUSED, SERVFAIL, T_A, T_AAAA, T_ANY, T_NS, T_SOA, T_TXT, YXDOMAIN, YXRRSET,
                   Labels, WireMessage, WireRR, Zone, lower_labels)

__all__ = ["RecordView", "Refusal", "plan_update", "refusal_from_results"]


class RecordView(Protocol):
    """The records as a front end last saw them: what queries are answered
    from, and what an UPDATE's prerequisites and ownership are checked
    against."""

    serial: int  # rises with every change; the SOA serial is derived from it

    def lookup(self, name: str) -> Record | None:
        """The record of ``name`` (relative to the zone, normalised), or None."""
        ...


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an UPDATE fails as a whole: the response's rcode and, when the
    request had EDNS, the Extended DNS Error (info code, text) to attach;
    ``tsig_error`` (RFC 8945, 0 for none) goes in the signed answer's TSIG RR."""

    rcode: int
    ede: tuple[int, str] | None = None
    tsig_error: int = 0


def plan_update(msg: WireMessage, key: TsigKey | None, zone: Zone, view: RecordView, *,
                name_servers: Mapping[str, NameServer], time_signed: int,
                mac: bytes) -> tuple[RecordOp, ...] | Refusal:
    """The ops an UPDATE needs, or why it is refused (see the module doc).

    ``msg`` has exactly one question, the zone section; ``key`` is the key
    that verified its TSIG, None when it had none, and ``time_signed`` and
    ``mac`` that TSIG's, stamped on every op. ``name_servers`` (by stored
    name) are the zone's NS names, answered from configuration. Checks, in order: signed,
    zone section, prerequisites (RFC 2136 3.2) against ``view``, then the
    prescan and translation of the update section (3.4)."""
    if key is None:
        return Refusal(REFUSED, (EDE_PROHIBITED, "updates must be signed with a TSIG key"))
    assert len(msg.questions) == 1
    section = msg.questions[0]
    if section.qtype != T_SOA or section.qclass != C_IN:
        return Refusal(FORMERR)
    if zone.relative(section.labels) != ():
        return Refusal(NOTZONE, (EDE_NOT_AUTHORITATIVE, f"this server updates only {zone.name}"))
    planned = (_check_prerequisites(msg.answers, zone, view, name_servers)
               or _plan(msg.authority, key, zone, view, name_servers))
    if isinstance(planned, Refusal):
        return planned
    return tuple(replace(op, tsig_key=key.name, tsig_time=time_signed, tsig_mac=mac.hex(),
                         tsig_part=part) for part, op in enumerate(planned))


def refusal_from_results(ops: Sequence[RecordOp],
                         results: Sequence[tuple[str, str]]) -> Refusal | None:
    """How an update ended, from the store's ``(status, value)`` for each op
    of ``ops`` that was run (``"ok"``, a refusal of
    :data:`mydns_lab.protocol.REFUSALS`, or ``"timeout"`` and the like):
    None when every op went through, else the refusal of the first failure."""
    for status, value in results:
        if status == "ok":
            continue
        if status == Status.REPLAYED:
            return Refusal(NOTAUTH, (EDE_PROHIBITED, str(value)), tsig_error=BADTIME)
        if status in REFUSALS:
            return Refusal(REFUSED, (EDE_PROHIBITED, str(value)))
        return Refusal(SERVFAIL, (EDE_OTHER, str(value)))
    if len(results) < len(ops):
        return Refusal(SERVFAIL, (EDE_OTHER, "the update was not completed"))
    return None


# --- prerequisites (RFC 2136 3.2) -----------------------------------------------------------


def _check_prerequisites(prereqs: tuple[WireRR, ...], zone: Zone, view: RecordView,
                         servers: Mapping[str, NameServer]) -> Refusal | None:
    """RFC 2136 3.2, against ``view``; None when all hold."""
    wanted: dict[tuple[Labels, int], set[bytes]] = {}
    for rr in prereqs:
        relative = zone.relative(rr.labels)
        if relative is None:
            return Refusal(NOTZONE, (EDE_NOT_AUTHORITATIVE, "a prerequisite is outside the zone"))
        if rr.ttl != 0:
            return Refusal(FORMERR)
        if rr.rclass in (C_ANY, C_NONE):
            if rr.rdata:
                return Refusal(FORMERR)
            exists = (_name_in_use(relative, view, servers) if rr.rtype == T_ANY
                      else _rrset(relative, rr.rtype, view, servers) is not None)
            if rr.rclass == C_ANY and not exists:
                return Refusal(NXDOMAIN if rr.rtype == T_ANY else NXRRSET)
            if rr.rclass == C_NONE and exists:
                return Refusal(YXDOMAIN if rr.rtype == T_ANY else YXRRSET)
        elif rr.rclass == C_IN:
            if rr.rtype not in (T_A, T_AAAA):
                return Refusal(NOTIMP, (EDE_NOT_SUPPORTED,
                                        "value prerequisites only for A and AAAA"))
            wanted.setdefault((lower_labels(relative), rr.rtype), set()).add(rr.rdata)
        else:
            return Refusal(FORMERR)
    for (relative, rtype), rdatas in wanted.items():
        if _rrset(relative, rtype, view, servers) != rdatas:
            return Refusal(NXRRSET)
    return None


def _lookup(relative: Labels, view: RecordView) -> Record | None:
    name = Zone.record_name(relative)
    return view.lookup(name) if name is not None else None


def _name_in_use(relative: Labels, view: RecordView,
                 servers: Mapping[str, NameServer]) -> bool:
    return (not relative or Zone.record_name(relative) in servers
            or _lookup(relative, view) is not None)


def _rrset(relative: Labels, rtype: int, view: RecordView,
           servers: Mapping[str, NameServer]) -> set[bytes] | None:
    """The RRset's RDATA for A and AAAA (a placeholder for the other types
    we serve), None when there is no such RRset; a name server's as its
    queries are answered."""
    if not relative:
        return {b""} if rtype in (T_SOA, T_NS) else None
    server = servers.get(Zone.record_name(relative) or "")
    held = server if server is not None else _lookup(relative, view)
    if held is None:
        return None
    if rtype in (T_A, T_AAAA):
        addresses = held.ipv4 if rtype == T_A else held.ipv6
        return {ipaddress.ip_address(a).packed for a in addresses} or None
    return {b""} if rtype == T_TXT and server is None else None


# --- the update section (RFC 2136 3.4) --------------------------------------------------------


def _plan(updates: tuple[WireRR, ...], key: TsigKey, zone: Zone, view: RecordView,
          servers: Mapping[str, NameServer]) -> tuple[RecordOp, ...] | Refusal:
    """Prescan (RFC 2136 3.4.1) and translate the updates into ops, or
    refuse them all. Each name's record is read from ``view`` once."""
    wanted: dict[str, tuple[set[str], set[str]]] = {}
    current: dict[str, Record | None] = {}
    for rr in updates:
        problem = _prescan(rr, zone)
        if problem is not None:
            return problem
        name = Zone.record_name(zone.relative(rr.labels) or ())
        if name is None or not key.grants_name(name, zone.name):
            shown = b".".join(rr.labels).decode("ascii", "replace")
            return Refusal(REFUSED, (EDE_PROHIBITED, f"key {key.name!r} may not change {shown!r}"))
        if name in servers:
            return Refusal(REFUSED, (EDE_PROHIBITED, f"{name!r} is a name server of the zone; "
                                     "its address is the operator's (--ns), choose another name"))
        if name not in current:
            current[name] = view.lookup(name)
            record = current[name]
            if record is not None and not same_owner(record.owner, key.owner):
                return Refusal(REFUSED, (EDE_PROHIBITED, f"name {name!r} is owned by another key"))
            wanted[name] = (set(record.ipv4), set(record.ipv6)) if record else (set(), set())
        v4, v6 = wanted[name]
        _apply_update(rr, v4, v6)
    return _ops(wanted, current, key)


def _ops(wanted: dict[str, tuple[set[str], set[str]]], current: dict[str, Record | None],
         key: TsigKey) -> tuple[RecordOp, ...] | Refusal:
    """One op per name whose addresses change: ``record_set`` with the
    wanted addresses, or ``record_delete`` when none are left."""
    ops: list[RecordOp] = []
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
            return Refusal(REFUSED, (EDE_PROHIBITED, str(exc)))
        ops.append(RecordOp("record_set", name, ipv4=ipv4, ipv6=ipv6,
                            txt=record.txt if record else (), owner=key.owner,
                            seq=(record.seq if record else 0) + 1))
    return tuple(ops)


def _prescan(rr: WireRR, zone: Zone) -> Refusal | None:
    """RFC 2136 3.4.1.3 for one update RR, and what the store can keep."""
    if zone.relative(rr.labels) is None:
        return Refusal(NOTZONE, (EDE_NOT_AUTHORITATIVE, "an update is outside the zone"))
    if rr.rclass == C_IN:
        if rr.rtype in META_TYPES:
            return Refusal(FORMERR)
        if rr.rtype not in (T_A, T_AAAA):
            return Refusal(REFUSED, (EDE_NOT_SUPPORTED, "only A and AAAA records can be added"))
    elif rr.rclass == C_ANY:
        if rr.ttl != 0 or rr.rdata or (rr.rtype in META_TYPES and rr.rtype != T_ANY):
            return Refusal(FORMERR)
    elif rr.rclass == C_NONE:
        if rr.ttl != 0 or rr.rtype in META_TYPES:
            return Refusal(FORMERR)
    else:
        return Refusal(FORMERR)
    if rr.rclass != C_ANY and rr.rtype in (T_A, T_AAAA):
        if len(rr.rdata) != (4 if rr.rtype == T_A else 16):
            return Refusal(FORMERR)
    return None


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
