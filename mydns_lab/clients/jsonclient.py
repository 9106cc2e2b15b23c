"""The client side of the original JSON protocol over UDP: one request,
one reply, with a timeout and bounded retries. Used by put.py, the
workloads and the tests (one way to talk to a front end)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import socket
import time
from typing import Any

Server = tuple[str, int]


class NoAnswer(Exception):
    """No front end answered within the attempts allowed."""


def parse_server(text: str, default_host: str = "127.0.0.1") -> Server:
    """``HOST:PORT``, ``:PORT`` or ``PORT`` -> (host, port); ValueError if bad."""
    host, _, port = text.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT")
    return (host.strip("[]") or default_host), int(port)


def server_text(server: Server) -> str:
    """``server`` for messages, as ``HOST:PORT`` (an IPv6 host in brackets)."""
    host = f"[{server[0]}]" if ":" in server[0] else server[0]
    return f"{host}:{server[1]}"


def json_call(server: tuple[str, int], request: dict[str, Any], timeout_s: float = 2.0,
              attempts: int = 1) -> dict[str, Any]:
    """Send ``request`` and return the decoded reply; raises NoAnswer.

    A retry re-sends the same request, so a Put without ``Seq`` should carry
    one if it may be retried (the front end would stamp each copy afresh).
    """
    family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
    request_id = _next_id()
    payload = json.dumps({**request, "Id": request_id}, separators=(",", ":")).encode()
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        for _ in range(attempts):
            sock.sendto(payload, server)
            reply = _await_reply(sock, request_id, timeout_s, server)
            if reply is not None:
                return reply
    raise NoAnswer(f"no answer from {server[0]}:{server[1]} after {attempts} attempt(s) "
                   f"of {timeout_s:g} s")


_ids = itertools.count(int.from_bytes(os.urandom(3), "big"))


def _next_id() -> int:
    return next(_ids)


def _await_reply(sock: socket.socket, request_id: int, timeout_s: float,
                 server: tuple[str, int]) -> dict[str, Any] | None:
    """The reply carrying ``request_id``; None on timeout. Replies to other
    (earlier, timed-out) requests are skipped."""
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        sock.settimeout(remaining)
        try:
            data, _ = sock.recvfrom(65535)
        except (socket.timeout, ConnectionRefusedError):
            return None
        try:
            reply = json.loads(data)
        except ValueError:
            raise NoAnswer(f"{server[0]}:{server[1]} answered with something that is not "
                           "JSON; is it a MyDNS front end?") from None
        if isinstance(reply, dict) and reply.get("Id", request_id) == request_id:
            return reply


class AsyncJsonClient:
    """One logical client of the JSON protocol on an asyncio loop: one
    request in flight at a time, counted (``sent``, ``received``) so that
    workloads can measure loss at the client's end."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.sent = 0
        self.received = 0
        self._waiter: Any = None
        self._transport: Any = None
        self._id = -1

    async def open(self) -> AsyncJsonClient:
        loop = asyncio.get_running_loop()
        client = self

        class _Protocol(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: object) -> None:
                client._on_datagram(data)

            def error_received(self, exc: Exception) -> None:
                pass  # e.g. ICMP port unreachable: the request just goes unanswered

        self._transport, _ = await loop.create_datagram_endpoint(_Protocol,
                                                                  remote_addr=self.server)
        return self

    async def call(self, request: dict[str, Any], timeout_s: float) -> dict[str, Any] | None:
        """Send ``request``; the decoded reply, or None when none came in time
        (a late reply to an earlier request is discarded)."""
        self._waiter = asyncio.get_running_loop().create_future()
        self._id = _next_id()
        payload = {**request, "Id": self._id}
        self._transport.sendto(json.dumps(payload, separators=(",", ":")).encode())
        self.sent += 1
        try:
            return await asyncio.wait_for(self._waiter, timeout_s)
        except asyncio.TimeoutError:
            return None
        finally:
            self._waiter = None

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _on_datagram(self, data: bytes) -> None:
        self.received += 1
        if self._waiter is None or self._waiter.done():
            return
        try:
            reply = json.loads(data)
        except ValueError:
            return
        if isinstance(reply, dict) and reply.get("Id", self._id) == self._id:
            self._waiter.set_result(reply)
