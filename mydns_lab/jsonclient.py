"""The client side of the original JSON protocol over UDP: one request,
one reply, with a timeout and bounded retries. Used by put.py, the
workloads and the tests (one way to talk to a front end)."""

from __future__ import annotations

import json
import socket
from typing import Any


class NoAnswer(Exception):
    """No front end answered within the attempts allowed."""


def parse_server(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` or ``PORT`` -> (host, port); ValueError if bad."""
    host, _, port = text.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT")
    return (host.strip("[]") or default_host), int(port)


def json_call(server: tuple[str, int], request: dict[str, Any], timeout_s: float = 2.0,
              attempts: int = 1) -> dict[str, Any]:
    """Send ``request`` and return the decoded reply; raises NoAnswer.

    A retry re-sends the same request, so a Put without ``Seq`` should carry
    one if it may be retried (the front end would stamp each copy afresh).
    """
    family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
    payload = json.dumps(request, separators=(",", ":")).encode()
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout_s)
        for _ in range(attempts):
            sock.sendto(payload, server)
            try:
                data, _ = sock.recvfrom(65535)
            except (socket.timeout, ConnectionRefusedError):
                continue
            try:
                reply = json.loads(data)
            except ValueError:
                raise NoAnswer(f"{server[0]}:{server[1]} answered with something that is not JSON") from None
            if isinstance(reply, dict):
                return reply
    raise NoAnswer(f"no answer from {server[0]}:{server[1]} after {attempts} attempt(s) "
                   f"of {timeout_s:g} s")
