"""The dyndns2 update protocol (``GET /nic/update``), as ddclient, inadyn
and home routers speak it to DynDNS, DuckDNS or Dynu.

``/nic/update?hostname=H[,H2...]&myip=ADDR[&myipv6=ADDR6]`` with HTTP Basic
credentials: the user name is ignored (routers insist on one), the password
is the name's token, exactly as put.py's and the JSON protocol's. Each host
becomes one JSON-protocol Put (:meth:`WebContext.json_request`, without
``Seq``: the front end stamps its clock), so an update over HTTP meets the
rules a JSON Put meets: ownership, ``Seq``, admission (claims per minute
from the client's address, reserved names, ``--max-names``). The reply is
``text/plain``, one line per host, in the order given (:data:`REPLY_OF_CODE`
maps the JSON ``Code`` to the word), always HTTP 200 except 401 with a
``WWW-Authenticate`` challenge when no credentials came at all.

A host is a name of the zone, fully qualified (``laptop.mydns`` or
``laptop.mydns.``) or a bare label (``laptop``), as DuckDNS and Dynu take
them; any other name is ``nohost``. The addresses are ``myip`` (one, or
several separated by commas, IPv4 or IPv6) and ``myipv6``; when ``myip``
is missing, empty or not an address, the client's own address stands in
for it, unless ``myipv6`` already gives an address of that family.
``system``, ``wildcard``, ``mx``, ``backmx`` and ``offline`` are accepted
and ignored.
"""

from __future__ import annotations

import base64
import hmac
import time
from functools import partial
from typing import Any, Protocol

from ..net.recordcopy import RecordCache
from ..protocol import Outcome, Record
from ..records import (InvalidRecord, json_owner, normalize_name, sender_address,
                       split_addresses)
from .http import App, Request, Response

MAX_HOSTS = 20
"""Hosts one request may update (more: ``numhost``, nothing changes)."""
REFRESH_AFTER_S = 3600.0
"""An update that changes nothing is answered ``nochg`` from the front
end's copy, without a write, unless the name was last written longer ago
than this: then it is written again, so a client that re-sends the same
address now and then (ddclient every 25 days) keeps its name from
``--expire``."""
REALM = "MyDNS"

REPLY_OF_CODE = {
    "owned": "badauth", "bad_signature": "badauth", "open": "badauth", "reserved": "badauth",
    "token_required": "badauth", "unknown_name": "badauth",
    "bad_request": "badauth",  # our request is well formed but for the password (too long)
    "invalid": "nohost",
    "rate_limited": "abuse", "zone_full": "abuse",
    "nospace": "dnserr",
    "unavailable": "911", "internal": "911", "stale": "911", "too_large": "911",
}
"""The dyndns2 word for each JSON ``Code`` (:class:`mydns_lab.net.jsonwire.RequestError`):
``badauth`` the password is not the name's (or the name takes no token),
``nohost`` no such name may exist, ``abuse`` the operator's limits (the
client should stop), ``dnserr`` the servers cannot write now, ``911`` try
again later (``stale``: a newer upload of the name, stamped by a clock
ahead of this front end's, is stored)."""


class UpdateSource(Protocol):
    """What updates read and call: ``app.WebContext`` is one (a protocol, so
    that this module need not import ``app``, which imports it)."""

    @property
    def zone(self) -> str: ...
    @property
    def records(self) -> RecordCache: ...
    async def json_request(self, request: dict[str, Any],
                           source: str | None) -> dict[str, Any]: ...


def add_routes(app: App, context: UpdateSource) -> None:
    """``GET /nic/update`` on ``app`` (no HEAD: a link checker's HEAD
    must not update a name)."""
    app.add_get("/nic/update", partial(nic_update, context), head=False)


async def nic_update(context: UpdateSource, request: Request) -> Response:
    """One dyndns2 update request; see the module docstring."""
    header = request.headers.get("Authorization")
    if header is None:
        return Response.text("badauth\n", status=401,
                             headers={"WWW-Authenticate": f'Basic realm="{REALM}"'})
    password = _password(header)
    hosts = [host.strip() for value in request.query.getall("hostname", [])
             for host in value.split(",") if host.strip()]
    if not hosts:
        return _text(["notfqdn"])
    if len(hosts) > MAX_HOSTS:
        return _text(["numhost"])
    source = request.remote  # the socket's peer: no header a client could set is read
    addresses = _addresses(request.query.get("myip", ""), request.query.get("myipv6", ""),
                           source)
    lines = []
    for host in hosts:
        lines.append(await _update(context, host, addresses, password, source))
    return _text(lines)


def _text(lines: list[str]) -> Response:
    return Response.text("".join(line + "\n" for line in lines))


def _password(header: str) -> str | None:
    """The password of a Basic ``Authorization`` header (RFC 7617: base64
    of ``user:password``, decoded here); None when it is no Basic credentials
    or has an empty password (which would claim an *open* name: a dyndns2
    update always names its token)."""
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except ValueError:  # not base64, not UTF-8
        return None
    _, colon, password = decoded.partition(":")
    return password if colon and password else None


def _addresses(myip: str, myipv6: str, source: str | None) -> tuple[tuple[str, ...],
                                                                       tuple[str, ...]] | None:
    """(IPv4, IPv6) to store, canonical; None when there are none."""
    given = _parsed(myip)
    ipv6 = _parsed(myipv6)
    ipv6 = ipv6 if ipv6 is not None and not ipv6[0] else None  # myipv6 holds IPv6 only
    if given is None:  # missing, empty or invalid: the client's own address
        given = ((), ())
        own = _parsed(_unmapped(source)) if source else None
        if own is not None and not (own[1] and ipv6):
            given = own
    v4, v6 = given[0], given[1] + (ipv6[1] if ipv6 else ())
    try:
        addresses = split_addresses(list(v4 + v6))
    except InvalidRecord:
        return None
    return addresses if addresses[0] or addresses[1] else None


def _parsed(text: str) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """Comma-separated addresses as (IPv4, IPv6); None unless every part is one."""
    parts = [part.strip() for part in text.split(",")]
    if not all(parts):
        return None
    try:
        return split_addresses(parts)
    except InvalidRecord:
        return None


def _unmapped(source: str) -> str:
    """An IPv4 client of a dual-stack socket is seen as ``::ffff:a.b.c.d``."""
    address = sender_address(source)
    return str(address) if address is not None and address.version == 4 else source


def relative_name(host: str, zone: str) -> str | None:
    """``host`` relative to ``zone`` in stored form: ``laptop``,
    ``laptop.mydns`` and ``laptop.mydns.`` are all ``laptop``; a name
    outside the zone, the zone itself or an invalid name is None."""
    apex = zone.lower().rstrip(".")
    name = host.lower().removesuffix(".")
    if name.endswith("." + apex):
        name = name[:-len(apex) - 1]
    elif "." in name or name == apex:
        return None
    if name.endswith("."):  # "laptop..mydns": normalize_name would drop the dot
        return None
    try:
        return normalize_name(name)
    except InvalidRecord:
        return None


async def _update(context: UpdateSource, host: str,
                  addresses: tuple[tuple[str, ...], tuple[str, ...]] | None,
                  password: str | None, source: str | None) -> str:
    """One host's reply line."""
    name = relative_name(host, context.zone)
    if name is None:
        return "nohost"
    if password is None:
        return "badauth"
    if addresses is None:
        return "911"  # no address given and none of the client's own to take
    shown = ",".join(addresses[0] + addresses[1])
    before = context.records.lookup(name) if context.records.loaded else None
    unchanged = before is not None and (before.ipv4, before.ipv6) == addresses
    if before is not None and unchanged and _owned_by(before, password) and _fresh(before):
        return f"nochg {shown}"  # as the JSON Put would say, but no write
    reply = await context.json_request({"Type": "Put", "Key": name,
                                        "Value": list(addresses[0] + addresses[1]),
                                        "Token": password}, source)
    if reply.get("Type") == "PutOk":
        changed = reply.get("Outcome") == Outcome.CLAIMED or not unchanged
        return f"{'good' if changed else 'nochg'} {shown}"
    return REPLY_OF_CODE.get(str(reply.get("Code")), "911")


def _owned_by(record: Record, password: str) -> bool:
    return hmac.compare_digest(record.owner, json_owner(password))


def _fresh(record: Record) -> bool:
    return time.time() * 1000 - record.updated_ms < REFRESH_AFTER_S * 1000

