"""The front ends' UDP socket loop (:mod:`mydns_lab.net.udp`): datagrams in
batches and in order, replies in order even when the kernel makes them
wait, a bounded queue, a handler that raises, bind errors, close.

Real sockets on 127.0.0.1 (and ::1 where the host has it), ports the kernel
picks; every wait polls a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import errno
import select
import socket
import time
from typing import Any, Callable

import pytest

from mydns_lab.net import udp
from mydns_lab.net.udp import BATCH, MAX_QUEUED, UdpServer

DEADLINE_S = 10.0


class RecordingServer:
    """Stands in for a :class:`UdpServer` where a test calls the handler
    itself: keeps what would have been sent, in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []
        self.sent_many = 0  # of them, how many went in a send_many

    def send(self, data: bytes, addr: Any) -> None:
        self.sent.append((data, addr))

    def send_many(self, replies: list[tuple[bytes, Any]]) -> None:
        self.sent.extend(replies)
        self.sent_many += len(replies)


async def until(condition: Callable[[], bool], what: str) -> None:
    """Let the loop run until ``condition()`` holds; fails after DEADLINE_S."""
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def client(family: int = socket.AF_INET) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.settimeout(DEADLINE_S)
    return sock


def test_a_burst_arrives_in_order_in_batches_and_is_answered() -> None:
    batches: list[list[bytes]] = []

    async def run() -> list[bytes]:
        def echo(batch: list[tuple[bytes, Any]]) -> None:
            batches.append([data for data, _ in batch])
            server.send_many([(b"re:" + data, addr) for data, addr in batch])

        server = UdpServer.bind("127.0.0.1", 0, echo)
        with client() as sock:
            try:
                # Sent before the loop runs: the socket holds them all at the first wake-up.
                for i in range(3 * BATCH):
                    sock.sendto(b"%d" % i, server.sockname())
                await until(lambda: sum(map(len, batches)) == 3 * BATCH, "every datagram")
                return [sock.recv(100) for _ in range(3 * BATCH)]
            finally:
                server.close()

    replies = asyncio.run(run())
    assert [data for batch in batches for data in batch] == [b"%d" % i for i in range(3 * BATCH)]
    assert max(map(len, batches)) == BATCH and len(batches) >= 3
    assert replies == [b"re:%d" % i for i in range(3 * BATCH)]


class RefusingSocket(socket.socket):
    """A UDP socket whose sendto says 'would block' while ``full`` is set,
    and keeps what it did send."""

    full = False

    def __init__(self) -> None:
        super().__init__(socket.AF_INET, socket.SOCK_DGRAM)
        self.sent: list[bytes] = []

    def sendto(self, data: Any, *args: Any) -> int:  # type: ignore[override]
        if self.full:
            raise BlockingIOError(errno.EAGAIN, "send buffer full")
        self.sent.append(bytes(data))
        return super().sendto(data, *args)


def test_replies_the_kernel_cannot_take_wait_in_order_and_the_queue_is_bounded() -> None:
    async def run() -> tuple[list[bytes], int]:
        sock = RefusingSocket()
        sock.bind(("127.0.0.1", 0))
        server = UdpServer(sock, lambda batch: None)
        with client() as receiver:  # bound so that the replies go somewhere; never read
            receiver.bind(("127.0.0.1", 0))
            to = receiver.getsockname()
            try:
                sock.full = True
                server.send(b"first", to)
                server.send_many([(b"%d" % i, to) for i in range(MAX_QUEUED + 5)])
                await asyncio.sleep(0)  # the writer callback finds the socket still full
                dropped = server.dropped
                sock.full = False
                await until(lambda: len(sock.sent) == MAX_QUEUED, "the queue to empty")
                server.send(b"after", to)
                return sock.sent, dropped
            finally:
                server.close()

    sent, dropped = asyncio.run(run())
    assert sent[0] == b"first" and sent[1:MAX_QUEUED] == [b"%d" % i for i in range(MAX_QUEUED - 1)]
    assert sent[-1] == b"after" and len(sent) == MAX_QUEUED + 1
    assert dropped == 6, "the first MAX_QUEUED wait; the rest are dropped and counted"


def test_a_handler_that_raises_is_reported_and_the_socket_still_served() -> None:
    errors: list[dict[str, Any]] = []
    seen: list[bytes] = []

    async def run() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: errors.append(ctx))

        def handler(batch: list[tuple[bytes, Any]]) -> None:
            seen.extend(data for data, _ in batch)
            if b"boom" in seen:
                seen.remove(b"boom")
                raise RuntimeError("a bug in the handler")

        server = UdpServer.bind("127.0.0.1", 0, handler)
        with client() as sock:
            try:
                sock.sendto(b"boom", server.sockname())
                await until(lambda: bool(errors), "the error to be reported")
                sock.sendto(b"next", server.sockname())
                await until(lambda: seen == [b"next"], "the next datagram")
            finally:
                server.close()

    asyncio.run(run())
    assert isinstance(errors[0]["exception"], RuntimeError)


def test_a_busy_port_raises_and_binds_nothing() -> None:
    async def run() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
            taken.bind(("127.0.0.1", 0))
            with pytest.raises(OSError) as info:
                UdpServer.bind("127.0.0.1", taken.getsockname()[1], lambda batch: None)
            assert info.value.errno == errno.EADDRINUSE

    asyncio.run(run())


def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("this Python has no IPv6")

    async def run() -> bytes:
        try:
            server = UdpServer.bind("::1", 0, lambda batch: server.send_many(
                [(data.upper(), addr) for data, addr in batch]))
        except OSError as exc:
            pytest.skip(f"this host cannot bind ::1: {exc}")
        with client(socket.AF_INET6) as sock:
            try:
                sock.sendto(b"v6", server.sockname()[:2])
                await until(lambda: _readable(sock), "the reply")
                return sock.recv(100)
            finally:
                server.close()

    assert asyncio.run(run()) == b"V6"


def test_close_is_idempotent_and_a_closed_server_sends_nothing() -> None:
    async def run() -> None:
        server = UdpServer.bind("127.0.0.1", 0, lambda batch: None)
        server.close()
        server.close()
        server.send(b"late", ("127.0.0.1", 9))
        server.send_many([(b"late", ("127.0.0.1", 9))])
        assert server.dropped == 0

    asyncio.run(run())


def test_every_name_exported_exists() -> None:
    assert all(hasattr(udp, name) for name in udp.__all__)


def _readable(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0])
