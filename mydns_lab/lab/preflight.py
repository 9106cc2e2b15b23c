"""Checks the launcher makes before anything starts: the zone is a name,
the name servers it publishes have addresses, and every socket the lab
will listen on can be bound.

``Lab.prepare`` builds the list of :class:`~mydns_lab.net.endpoints.Endpoint`
(protocol, address, port) from the front ends' settings and passes it to
:func:`endpoint_problem`; a front end that still cannot bind (the port was
taken between the check and the bind) reports it, and the launcher words it
with :func:`bind_problem`. Each problem is one line saying what is wrong
and what to do.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import socket

import psutil

from ..dns.nameservers import NameServer, default_name_servers, name_servers
from ..dns.wire import Zone
from ..records import InvalidRecord
from ..net.endpoints import Endpoint, Proto
from ..web.app import tls_context

_WILDCARDS = ("0.0.0.0", "::")


def zone_name(text: str) -> str:
    """The ``--zone`` flag type: a DNS name, normalised with its trailing dot."""
    try:
        return Zone.of(text).name
    except InvalidRecord as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a zone name: {exc}") from None


def name_server_entry(text: str) -> tuple[str, str]:
    """The ``--ns NAME=ADDR`` flag type, as ``(NAME, ADDR)``; whether NAME
    is in the zone is :func:`published_name_servers`'s to say, once
    ``--zone`` is known."""
    name, sep, address = text.partition("=")
    if not sep or not name.strip() or not address.strip():
        raise argparse.ArgumentTypeError(
            f"expected NAME=ADDR such as ns1=192.0.2.53 or ns2.mydns.=2001:db8::53, got {text!r}")
    return name.strip(), address.strip()


def published_name_servers(zone: str, given: list[tuple[str, str]], bind: str,
                           nclerks: int) -> tuple[NameServer, ...]:
    """The zone's NS set: the ``--ns`` entries ``given``, else ``ns1`` ..
    ``ns<nclerks>`` at ``bind``, or, when ``bind`` is a wildcard (every
    address of the host), at :func:`host_address` of its family (the
    launcher notes which; ``--ns`` chooses). Raises ValueError, one line
    saying what to do, for a bad entry."""
    if given:
        return name_servers(Zone.of(zone), given)
    if bind in _WILDCARDS:
        bind = host_address(6 if ":" in bind else 4)
    return default_name_servers(bind, nclerks)


def host_address(version: int) -> str:
    """This host's first address of IP ``version`` that others can reach
    (not loopback, link-local or multicast; in :func:`host_addresses`'
    order), or the loopback address when it has none."""
    for text in host_addresses():
        ip = ipaddress.ip_address(text)
        if ip.version == version and not (ip.is_loopback or ip.is_link_local
                                          or ip.is_multicast or ip.is_unspecified):
            return str(ip)
    return "127.0.0.1" if version == 4 else "::1"


def tls_problem(cert_file: str, key_file: str) -> str | None:
    """Why ``--http-cert``/``--http-key`` cannot serve HTTPS, in one line,
    or None when the certificate chain and its key load."""
    try:
        tls_context(cert_file, key_file)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        return (f"--http-cert {cert_file} with --http-key {key_file} does not load "
                f"({exc}); give a PEM certificate chain and its private key")
    return None


def endpoint_problem(endpoint: Endpoint) -> str | None:
    """Why ``endpoint`` cannot be bound now, in one line, or None when it can.

    The trial socket is set up as asyncio will set up the front end's
    (SO_REUSEADDR on TCP only), so the check refuses what the bind would."""
    family = socket.AF_INET6 if ipaddress.ip_address(endpoint.address).version == 6 \
        else socket.AF_INET
    kind = socket.SOCK_DGRAM if endpoint.proto is Proto.UDP else socket.SOCK_STREAM
    with socket.socket(family, kind) as trial:
        if kind == socket.SOCK_STREAM:
            trial.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                trial.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            trial.bind((endpoint.address, endpoint.port))
        except OSError as exc:
            return bind_problem(endpoint, exc.errno, exc.strerror or str(exc))
    return None


def bind_problem(endpoint: Endpoint, error: int | None, reason: str) -> str:
    """One line for a failed bind of ``endpoint`` with ``errno`` ``error``."""
    if error == errno.EADDRINUSE:
        return (f"{endpoint} is already in use by {port_holder(endpoint)}; stop that program "
                f"or choose another {endpoint.port_flag}")
    if error == errno.EADDRNOTAVAIL:
        return (f"--bind {endpoint.address} is not an address of this host (it has "
                f"{', '.join(host_addresses())}); pass one of those, or 0.0.0.0 for all")
    if error == errno.EACCES and endpoint.port < 1024:
        return (f"{endpoint}: permission denied: ports below 1024 need root or "
                f"CAP_NET_BIND_SERVICE; choose {endpoint.port_flag} 1024 or above")
    return f"cannot listen on {endpoint}: {reason}"


def port_holder(endpoint: Endpoint) -> str:
    """``name (pid N)`` of the process bound to ``endpoint``'s port, or
    words saying it cannot be seen (other users' sockets need root)."""
    kind = "udp" if endpoint.proto is Proto.UDP else "tcp"
    try:
        connections = psutil.net_connections(kind=kind)
    except (psutil.AccessDenied, OSError):
        return "another program (this user may not list sockets)"
    for conn in connections:
        if not conn.laddr or conn.laddr.port != endpoint.port or conn.pid is None:
            continue
        if kind == "tcp" and conn.status != psutil.CONN_LISTEN:
            continue
        if _overlaps(conn.laddr.ip, endpoint.address):
            try:
                return f"{psutil.Process(conn.pid).name()} (pid {conn.pid})"
            except psutil.Error:
                return f"pid {conn.pid}"
    return "another program (its process is not visible to this user)"


def _overlaps(bound: str, wanted: str) -> bool:
    """Whether a socket bound to ``bound`` keeps one from binding ``wanted``
    on the same port (a wildcard overlaps every address of its family)."""
    return bound == wanted or bound in _WILDCARDS or wanted in _WILDCARDS \
        or bound == f"::ffff:{wanted}"


def host_addresses() -> list[str]:
    """This host's IPv4 and IPv6 addresses, without scope suffixes."""
    found: list[str] = []
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family in (socket.AF_INET, socket.AF_INET6):
                text = address.address.split("%")[0]
                if text not in found:
                    found.append(text)
    return found
