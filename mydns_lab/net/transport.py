"""Pipes between the lab's processes: batched envelopes over a Connection.

Every process talks to the router through one duplex ``multiprocessing``
pipe. On a reliable network the launcher also gives each server a pipe
straight to every other server and to every front end: messages between
them skip the router, two process hops of four on a put's way through the
leader and a follower. A process collects what it sends during one turn of
its loop in an :class:`Outbox` and writes it as one frame per pipe, so a
Ready batch of twenty messages costs one write, not twenty.
"""

from __future__ import annotations

import selectors
from collections import Counter
from multiprocessing.connection import Connection
from typing import Any, Callable

from ..codec import DecodeError, Envelope, decode, encode, pack_envelopes, unpack_envelopes
from ..reports import DirectTraffic

LAUNCHER = 0
"""Address of the launcher: status reports go there, outside the fault layer."""


def link_kind(servers: frozenset[int], src: int, dst: int) -> str:
    """What the router and the direct pipes count a message under: ``raft``
    (server to server), ``request`` (to a server) or ``reply``."""
    if src in servers and dst in servers:
        return "raft"
    return "request" if dst in servers else "reply"


class Outbox:
    """What a process sends during one turn, written as one frame per pipe.

    Everything goes to the router on ``conn``, except messages for a peer
    in ``direct`` (its pipe straight to that peer), which go there and are
    counted here as the router counts what it carries (:meth:`take_traffic`).
    A direct pipe whose peer is gone is dropped for good, and what was
    queued on it goes by the router, which knows whether the peer came back
    (a restarted server gets only a router pipe).
    """

    def __init__(self, conn: Connection, direct: dict[int, Connection] | None = None,
                 address: int = 0, servers: frozenset[int] = frozenset()) -> None:
        self._conn = conn
        self.direct: dict[int, Connection] = dict(direct or {})
        self._address, self._servers = address, servers
        self._pending: list[Envelope] = []
        self._pending_direct: dict[int, list[Envelope]] = {}
        self._links: Counter[str] = Counter()
        self._by_type: Counter[str] = Counter()

    def send(self, dst: int, msg: Any) -> None:
        envelope = (dst, type(msg).__name__, encode(msg))
        if dst in self.direct:
            self._pending_direct.setdefault(dst, []).append(envelope)
        else:
            self._pending.append(envelope)

    def flush(self) -> None:
        """Write everything queued, one frame per pipe, front ends' before
        servers'. Raises OSError (or EOFError) when the router is gone; a
        direct pipe that fails is dropped and its frame goes by the router."""
        if self._pending_direct:
            batches, self._pending_direct = self._pending_direct, {}
            # Clients' replies first: a front end is waiting on them, while a
            # server's batch may be a commit notice that waits on nothing,
            # and writing it wakes that server to compete for the CPU.
            for dst, batch in sorted(batches.items(), key=lambda item: item[0] in self._servers):
                if self._write_direct(dst, batch):
                    self._count(dst, batch)
                else:
                    self._pending.extend(batch)
        if self._pending:
            batch, self._pending = self._pending, []
            self._conn.send_bytes(pack_envelopes(batch))

    def drop_direct(self, peer: int) -> None:
        """Forget the direct pipe to ``peer`` (its process is gone)."""
        conn = self.direct.pop(peer, None)
        if conn is not None:
            conn.close()

    def report(self, status: Any) -> None:
        """Queue ``status`` for the launcher, and with it what went on the
        direct pipes since the last report (the router counts only its own)."""
        self.send(LAUNCHER, status)
        traffic = self.take_traffic()
        if traffic is not None:
            self.send(LAUNCHER, traffic)

    def take_traffic(self) -> DirectTraffic | None:
        """What went on direct pipes since the last call (None: nothing)."""
        if not self._links:
            return None
        traffic = DirectTraffic(tuple(self._links.items()), tuple(self._by_type.items()))
        self._links, self._by_type = Counter(), Counter()
        return traffic

    def _write_direct(self, dst: int, batch: list[Envelope]) -> bool:
        conn = self.direct.get(dst)
        if conn is None:
            return False
        try:
            conn.send_bytes(pack_envelopes(batch))
        except OSError:
            self.drop_direct(dst)
            return False
        return True

    def _count(self, dst: int, batch: list[Envelope]) -> None:
        self._links[link_kind(self._servers, self._address, dst)] += len(batch)
        for _, kind, _ in batch:
            self._by_type[kind] += 1


class Inbox:
    """Waits on a process's router pipe and its direct pipes at once (one
    selector for the process's life) and reads what came."""

    def __init__(self, conn: Connection, outbox: Outbox) -> None:
        self._outbox = outbox
        self._selector = selectors.DefaultSelector()
        self._selector.register(conn, selectors.EVENT_READ, None)
        for peer, direct in outbox.direct.items():
            self._selector.register(direct, selectors.EVENT_READ, peer)

    def wait(self, timeout_s: float, on_error: Callable[[str], None] | None = None) -> list[Any]:
        """Every message that arrives within ``timeout_s`` (or at once, when
        some are waiting). Raises EOFError when the router is gone; a
        direct pipe that closes is dropped (its peer died)."""
        messages: list[Any] = []
        for key, _ in self._selector.select(timeout_s):
            conn = key.fileobj
            assert isinstance(conn, Connection)
            if key.data is None:
                messages += receive(conn, on_error)
                continue
            try:
                messages += receive(conn, on_error)
            except (EOFError, OSError):
                self._selector.unregister(conn)
                self._outbox.drop_direct(key.data)
        return messages


def receive(conn: Connection, on_error: Callable[[str], None] | None = None) -> list[Any]:
    """Decode every message waiting on ``conn`` without blocking.

    A frame or message that does not decode is skipped (and reported to
    ``on_error``): no input may stop a process.
    """
    messages = []
    while conn.poll(0):
        try:
            envelopes = unpack_envelopes(conn.recv_bytes())
        except DecodeError as exc:
            if on_error is not None:
                on_error(f"dropped an unreadable frame: {exc}")
            continue
        for _, _, payload in envelopes:
            try:
                messages.append(decode(payload))
            except DecodeError as exc:
                if on_error is not None:
                    on_error(f"dropped an unreadable message: {exc}")
    return messages
