"""A UDP socket served on the running asyncio loop, many datagrams per wake-up.

asyncio's datagram transport reads one datagram each time the selector says
the socket is readable, so every DNS query costs a turn of the event loop.
On this project's 2-core machine a handler that answers from a dict behind
that transport served about 15,000 queries/s to ``dnsperf``; the same handler
behind a loop that drains the socket on each wake-up served 68,000
(``docs/performance.md``, "The DNS path's socket loop"). :class:`UdpServer`
is that loop.

The contract, all on the loop's thread: ``on_datagrams(batch)`` is called
once per wake-up with the datagrams read, as ``(data, addr)`` pairs in
arrival order, at most :data:`BATCH` of them; then other callbacks get their
turn. A handler can so do once per batch what it would otherwise do per
datagram (read the clock, update counters). An exception it raises goes to
the loop's exception handler (as asyncio's own transports do) and the socket
keeps being served. :meth:`UdpServer.send` never blocks: a reply
the kernel cannot take at once waits in a bounded queue, in order, and is
written when the socket can take it; beyond :data:`MAX_QUEUED` replies it is
dropped, as a full network would drop it (the DNS and JSON clients retry).
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from typing import Any, Callable

__all__ = ["Address", "BATCH", "MAX_QUEUED", "UdpServer"]

BATCH = 64
"""Datagrams read per wake-up before the loop runs its other callbacks."""
MAX_QUEUED = 1024
"""Replies held while the socket's send buffer is full; more are dropped."""
MAX_DATAGRAM = 65535

Address = Any  # (host, port) for IPv4, (host, port, flowinfo, scope_id) for IPv6


class UdpServer:
    """One bound UDP socket, read in batches; see the module doc."""

    def __init__(self, sock: socket.socket,
                 on_datagrams: Callable[[list[tuple[bytes, Address]]], None]) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._on_datagrams = on_datagrams
        self._queued: deque[tuple[bytes, Address]] = deque()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._drain)
        self.dropped = 0
        """Replies not sent: the queue was full, or the kernel refused them."""

    @classmethod
    def bind(cls, host: str, port: int,
             on_datagrams: Callable[[list[tuple[bytes, Address]]], None]) -> UdpServer:
        """Serve ``host``:``port`` (a name or an IPv4/IPv6 address); raises
        OSError naming why when no address it resolves to can be bound."""
        error: OSError | None = None
        for family, kind, proto, _name, address in socket.getaddrinfo(
                host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE):
            sock = socket.socket(family, kind, proto)
            try:
                sock.bind(address)
            except OSError as exc:
                sock.close()
                error = exc
                continue
            return cls(sock, on_datagrams)
        raise error or OSError(f"{host!r} resolves to no address")

    def sockname(self) -> Address:
        """The address the socket is bound to (its port when 0 was asked)."""
        return self._sock.getsockname()

    def send(self, data: bytes, addr: Address) -> None:
        """Send ``data`` to ``addr`` now, or as soon as the socket can take it."""
        if self._sock.fileno() < 0:
            return  # closed
        if not self._queued:
            try:
                self._sock.sendto(data, addr)
                return
            except (BlockingIOError, InterruptedError):
                self._loop.add_writer(self._sock.fileno(), self._write_queued)
            except OSError:
                self.dropped += 1  # e.g. an address the host cannot reach
                return
        if len(self._queued) >= MAX_QUEUED:
            self.dropped += 1
            return
        self._queued.append((data, addr))

    def send_many(self, replies: list[tuple[bytes, Address]]) -> None:
        """:meth:`send` each ``(data, addr)`` pair, in order (one call per
        batch: the hot path writes straight to the socket)."""
        if self._queued or self._sock.fileno() < 0:
            for data, addr in replies:
                self.send(data, addr)
            return
        sendto = self._sock.sendto
        for sent, (data, addr) in enumerate(replies):
            try:
                sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                for data, addr in replies[sent:]:
                    self.send(data, addr)  # queues them, in order
                return
            except OSError:
                self.dropped += 1

    def close(self) -> None:
        """Stop reading and writing and close the socket; idempotent."""
        if self._sock.fileno() < 0:
            return
        self._loop.remove_reader(self._sock.fileno())
        self._loop.remove_writer(self._sock.fileno())
        self._queued.clear()
        self._sock.close()

    def _drain(self) -> None:
        receive, batch = self._sock.recvfrom, []
        for _ in range(BATCH):
            try:
                batch.append(receive(MAX_DATAGRAM))
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue  # an ICMP error reported on the socket: nothing to read
        if batch:
            self._on_datagrams(batch)

    def _write_queued(self) -> None:
        while self._queued:
            data, addr = self._queued[0]
            try:
                self._sock.sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.dropped += 1
            self._queued.popleft()
        self._loop.remove_writer(self._sock.fileno())
