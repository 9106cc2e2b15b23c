"""The client side of the original JSON protocol over UDP: one request,
one reply, with a timeout and bounded retries. Used by put.py, the
workloads and the tests (one way to talk to a front end)."""

from __future__ import annotations

import asyncio
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
    """Send ``request`` on a socket of its own and return the decoded
    reply; raises NoAnswer. See :meth:`JsonConnection.call`."""
    with JsonConnection(server) as connection:
        return connection.call(request, timeout_s, attempts)


class JsonConnection:
    """A UDP socket connected to one front end, kept for many requests
    (one at a time), as a program that sends many does."""

    def __init__(self, server: Server) -> None:
        self.server = server
        family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self._sock.connect(server)
        except OSError:
            self._sock.close()
            raise

    def __enter__(self) -> JsonConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def call(self, request: dict[str, Any], timeout_s: float = 2.0,
             attempts: int = 1) -> dict[str, Any]:
        """Send ``request`` and return the decoded reply; raises NoAnswer.

        The reply is the first JSON object that carries this request's
        ``Id`` (a fresh one per call, never taken from ``request``) and
        comes from the server: the socket is connected, so the kernel drops
        datagrams from any other address or port, and a datagram without
        the ``Id``, with another, or not JSON at all is skipped while the
        wait goes on. So a forged reply needs the request's port and
        ``Id``, i.e. a sender on the path. A retry re-sends the same
        request, so a Put without ``Seq`` should carry one if it may be
        retried (the front end would stamp each copy afresh).
        """
        server = self.server
        request_id = _next_id()
        payload = json.dumps({**request, "Id": request_id}, separators=(",", ":")).encode()
        not_json = False
        for _ in range(attempts):
            try:
                self._sock.send(payload)
            except ConnectionRefusedError:  # an earlier attempt's port unreachable
                continue
            reply, skipped = _await_reply(self._sock, request_id, timeout_s)
            if reply is not None:
                return reply
            not_json = not_json or skipped
        if not_json:
            raise NoAnswer(f"{server_text(server)} answered with something that is not JSON; "
                           "is it a MyDNS front end?")
        raise NoAnswer(f"no answer from {server[0]}:{server[1]} after {attempts} attempt(s) "
                       f"of {timeout_s:g} s")


def _next_id() -> int:
    """A request ``Id``: 63 random bits (a signed 64-bit integer, which the
    front end echoes), so an off-path sender cannot guess it."""
    return int.from_bytes(os.urandom(8), "big") >> 1


def _await_reply(sock: socket.socket, request_id: int,
                 timeout_s: float) -> tuple[dict[str, Any] | None, bool]:
    """The reply on connected ``sock`` carrying ``request_id`` (None on
    timeout or port unreachable), and whether a datagram that is not JSON
    was skipped. Replies without that ``Id`` (forged, or to earlier,
    timed-out requests) are skipped too."""
    deadline = time.monotonic() + timeout_s
    not_json = False
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None, not_json
        sock.settimeout(remaining)
        try:
            data = sock.recv(65535)
        except (socket.timeout, ConnectionRefusedError):
            return None, not_json
        try:
            reply = json.loads(data)
        except (ValueError, RecursionError):  # not JSON, or nested too deep to read
            not_json = True
            continue
        if isinstance(reply, dict) and _is_id(reply.get("Id"), request_id):
            return reply, not_json


def _is_id(value: object, request_id: int) -> bool:
    """``value`` is ``request_id`` itself (JSON ``true`` is not ``1``)."""
    return type(value) is int and value == request_id


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
