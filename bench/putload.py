"""A closed-loop put load with as little client CPU per put as we can.

The throughput benchmark shares the machine's two cores with the lab it
measures, as ``etcdctl check perf`` (compiled Go) shares them with etcd.
An asyncio client per uploader cost about 80 us of CPU per acknowledged
put, as much as a front end; this loop costs a fraction of that, so the
figure measures the lab rather than its load generator.

Each uploader owns one name and keeps exactly one put in flight, as
before: a new put goes out only when its previous one was answered or
timed out. All uploaders share one UDP socket per front end; replies are
matched by the request ``Id`` and read many to a wake-up.
"""

from __future__ import annotations

import json
import os
import selectors
import socket
import time
from dataclasses import dataclass, field
from typing import Callable

Server = tuple[str, int]

CLAIM_WITHIN_S = 30.0
"""How long a benchmark's uploaders may take to claim their names before it
stops, saying the lab is not serving."""


@dataclass
class _Uploader:
    name: str
    sock: socket.socket
    seq: int = 0
    token: str = ""
    in_flight: int = 0          # the Id of the put awaiting its reply (0: none)
    sent_at: float = 0.0
    claimed: bool = False


@dataclass
class LoadResult:
    """What a run of :func:`run_load` saw (latencies in ms, acked puts only)."""

    acked: int = 0
    refused: int = 0
    timed_out: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)


class PutLoad:
    """``clients`` uploaders spread round-robin over ``servers``."""

    def __init__(self, servers: list[Server], clients: int, timeout_s: float = 2.0) -> None:
        self._timeout_s = timeout_s
        self._selector = selectors.DefaultSelector()
        self._socks = []
        for server in servers:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.connect(server)
            sock.setblocking(False)
            self._selector.register(sock, selectors.EVENT_READ)
            self._socks.append(sock)
        self._uploaders = [_Uploader(f"bench-{os.getpid()}-{i}", self._socks[i % len(servers)])
                           for i in range(clients)]
        self._by_id: dict[int, _Uploader] = {}
        self._next_id = 1
        self.acked = 0  # every acknowledged update so far, claims not counted

    def close(self) -> None:
        for sock in self._socks:
            self._selector.unregister(sock)
            sock.close()
        self._selector.close()

    def claim(self, within_s: float = CLAIM_WITHIN_S) -> None:
        """Every uploader claims its name; raises SystemExit past ``within_s``."""
        give_up = time.monotonic() + within_s
        while not all(u.claimed for u in self._uploaders):
            now = time.monotonic()
            if now > give_up:
                raise SystemExit(f"could not claim the benchmark's names within {within_s:g} s: "
                                 "is the lab up and its leader elected?")
            for u in self._uploaders:
                if not u.claimed and not u.in_flight:
                    self._send(u, now)
            self._turn(LoadResult(), now + 0.05, resend=False)

    def run(self, seconds: float,
            every_second: Callable[[LoadResult, float], None] | None = None) -> LoadResult:
        """Puts for ``seconds``, then a wait (up to the timeout) for those
        in flight; ``every_second`` sees the result so far and the time
        since the start once a second."""
        result = LoadResult()
        started = time.monotonic()
        end = started + seconds
        next_report = started + 1.0 if every_second is not None else end
        for u in self._uploaders:
            if not u.in_flight:
                self._send(u, started)
        while (now := time.monotonic()) < end:
            if now >= next_report:
                every_second(result, now - started)  # type: ignore[misc]  (set when reporting)
                next_report += 1.0
            self._turn(result, min(end, next_report), resend=True)
        drain_until = time.monotonic() + self._timeout_s
        while self._by_id and time.monotonic() < drain_until:
            self._turn(result, drain_until, resend=False)
        result.seconds = time.monotonic() - started
        return result

    def _send(self, u: _Uploader, now: float) -> None:
        u.seq += 1
        address = f"10.{(u.seq >> 16) & 255}.{(u.seq >> 8) & 255}.{u.seq & 255}"
        request = {"Type": "Put", "Key": u.name, "Value": address, "Seq": u.seq,
                   "Id": self._next_id}
        if u.token:
            request["Token"] = u.token
        self._by_id.pop(u.in_flight, None)
        u.in_flight, u.sent_at = self._next_id, now
        self._by_id[self._next_id] = u
        self._next_id += 1
        try:
            u.sock.send(json.dumps(request, separators=(",", ":")).encode())
        except BlockingIOError:
            pass  # counted as a timeout when no reply comes

    def _turn(self, result: LoadResult, until: float, resend: bool) -> None:
        """One wait for replies (at most until ``until``), then every datagram
        waiting on every socket; answered uploaders send their next put."""
        now = time.monotonic()
        for key, _ in self._selector.select(max(0.0, min(until - now, 0.05))):
            sock = key.fileobj
            while True:
                try:
                    data = sock.recv(65535)  # type: ignore[attr-defined]
                except (BlockingIOError, ConnectionRefusedError):
                    break
                self._on_reply(data, result, resend)
        now = time.monotonic()
        for u in self._uploaders:  # a put unanswered past the timeout: the next one
            if u.in_flight and now - u.sent_at > self._timeout_s:
                result.timed_out += 1
                self._by_id.pop(u.in_flight, None)
                u.in_flight = 0
                if resend:
                    self._send(u, now)

    def _on_reply(self, data: bytes, result: LoadResult, resend: bool) -> None:
        try:
            reply = json.loads(data)
            u = self._by_id.pop(reply.get("Id"), None)
        except (ValueError, TypeError, AttributeError):
            return
        if u is None:
            return  # a late reply to a put already given up on
        now = time.monotonic()
        u.in_flight = 0
        if reply.get("Type") == "PutOk":
            if u.claimed:
                result.acked += 1
                self.acked += 1
                result.latencies_ms.append((now - u.sent_at) * 1000)
            u.claimed = True
            u.token = u.token or reply.get("Token", "")
        else:
            result.refused += 1
        if resend:
            self._send(u, now)
