"""Record-store operations from an asyncio program, over the router pipe.

A front end may have many requests in flight; each runs on its own
:class:`~mydns_lab.clerks.Clerk` (one operation at a time per clerk, as
exactly-once needs), taken from a pool. Clerk ids are random 62-bit numbers
drawn when the clerk is made, so a restarted front end never reuses the
session of an earlier one. After a burst, at most :data:`MAX_IDLE_CLERKS`
stay in the pool; the rest are dropped (each clerk costs a few KB here,
and every clerk id that wrote is a session the store keeps, so the pool is
sized to reuse clerks under any ordinary load).
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Protocol

from ..clerks import Clerk, ClerkTiming, Finished
from ..core.messages import NO_NODE
from ..protocol import ClientReply, ClientRequest, StoreOp
from .transport import LAUNCHER, FrameReader, Outbox, receive


MAX_IDLE_CLERKS = 64
"""Idle clerks kept for reuse; more than this many concurrent operations
make new clerks, which are dropped once they finish."""

SWEEP_EVERY_S = 0.005
"""The least time between two looks at the busy calls' deadlines. One timer
for every call in flight, due at the earliest deadline but no sooner than
this, replaces the two timers a call used to arm (a resend deadline and an
expiry): arming, heap-ordering and cancelling those cost about a tenth of
a front end's CPU per put under load. A resend is due at least a backoff
(6 ms or more) or a request timeout (hundreds of ms) after the last send,
and a call expires after seconds, so acting up to 5 ms late is noise."""


class ClusterTimeout(Exception):
    """No answer within the deadline; the operation may or may not have
    taken effect."""


@dataclass(slots=True)
class ClientCounters:
    calls: int = 0
    timeouts: int = 0
    retries: int = 0


class RecordStore(Protocol):
    """What a front end needs of a record store: :class:`ClusterClient`
    (the embedded Raft store, over the router) and
    :class:`mydns_lab.etcd.store.EtcdStore` both are one."""

    counters: ClientCounters
    closed: asyncio.Event

    async def call(self, op: StoreOp, timeout_s: float) -> Finished:
        """Run ``op``; raises ClusterTimeout past ``timeout_s``."""

    def send_status(self, dst: int, msg: object) -> None:
        """A status report to the launcher."""

    def flush_now(self) -> None:
        """Write whatever is queued at once (on the way out)."""


def now_ms() -> int:
    return int(time.monotonic() * 1000)


@dataclass(slots=True)
class _Call:
    """A call in flight: its clerk, the future its caller awaits, and when
    it expires (loop time) after ``timeout_s``."""

    clerk: Clerk
    future: asyncio.Future[Finished]
    expires_at: float
    timeout_s: float


def _due_at(call: _Call) -> float:
    """When ``call`` next needs a sweep: it expires, or its clerk resends.
    Loop time and :func:`now_ms` both count ``time.monotonic``."""
    deadline_ms = call.clerk.deadline_ms
    return call.expires_at if deadline_ms is None else min(call.expires_at, deadline_ms / 1000)


class ClusterClient:
    def __init__(self, conn: Connection, address: int, servers: tuple[int, ...],
                 timing: ClerkTiming = ClerkTiming(request_timeout_ms=300),
                 direct: dict[int, Connection] | None = None) -> None:
        """``conn`` is the pipe to the router, ``direct`` the pipes straight
        to servers (a reliable network; see :mod:`mydns_lab.net.transport`)."""
        self._loop = asyncio.get_running_loop()
        self._conn = conn
        self._address = address
        self._servers = servers
        self._timing = timing
        self._rng = random.Random()
        self._outbox = Outbox(conn, direct, address, frozenset(servers))
        self._flush_soon = False
        self._idle: list[Clerk] = []
        self._leader = NO_NODE  # the server that last answered any clerk as leader
        self._busy: dict[int, _Call] = {}  # by clerk id
        self._sweep: asyncio.TimerHandle | None = None  # due at the earliest deadline
        self._sweep_at = float("inf")
        self._watched: set[int] = set()  # servers whose direct pipes hold frames back
        self.counters = ClientCounters()
        self.closed = asyncio.Event()
        self._reader = FrameReader(conn)
        self._direct_readers = {server: FrameReader(pipe)
                                for server, pipe in self._outbox.direct.items()}
        self._loop.add_reader(conn.fileno(), self._on_readable)
        for server, reader in self._direct_readers.items():
            self._loop.add_reader(reader.fileno(), self._on_direct_readable, server)

    @property
    def clerks_busy(self) -> int:
        return len(self._busy)

    @property
    def clerks_idle(self) -> int:
        return len(self._idle)

    async def call(self, op: StoreOp, timeout_s: float) -> Finished:
        """Run ``op`` until the cluster answers; raises ClusterTimeout, or
        whatever sending ``op`` raised (an op the codec cannot carry). Either
        way the clerk is back in the pool, idle, when it returns."""
        clerk = self._idle.pop() if self._idle else self._new_clerk()
        clerk.follow_leader(self._leader)
        future: asyncio.Future[Finished] = self._loop.create_future()
        # The sweep expires the call, rather than asyncio.wait_for, which puts
        # a second future and a loop turn between the reply and this coroutine.
        call = _Call(clerk, future, self._loop.time() + timeout_s, timeout_s)
        self._busy[clerk.client_id] = call
        self.counters.calls += 1
        try:
            clerk.start(op, now_ms())
            self._sweep_by(_due_at(call))
            outcome = await future
            self.counters.retries += outcome.attempts - 1
            return outcome
        except ClusterTimeout:
            clerk.abandon()
            self.counters.timeouts += 1
            raise
        except BaseException:
            clerk.abandon()  # an exception (or cancellation) mid-operation: the clerk is free again
            raise
        finally:
            del self._busy[clerk.client_id]
            if len(self._idle) < MAX_IDLE_CLERKS:
                self._idle.append(clerk)

    def send_status(self, dst: int, msg: object) -> None:
        """``msg`` to the launcher (``dst``), with the direct pipes' traffic
        (:meth:`Outbox.report`)."""
        assert dst == LAUNCHER, "status reports go to the launcher"
        self._outbox.report(msg)
        self._schedule_flush()

    def flush_now(self) -> None:
        """Write whatever is queued at once (used on the way out)."""
        self._flush()

    # --- internals ------------------------------------------------------------------

    def _new_clerk(self) -> Clerk:
        client_id = self._rng.getrandbits(62) | 1
        return Clerk(client_id, self._servers, random.Random(client_id), self._send,
                     self._timing, address=self._address)

    def _send(self, req: ClientRequest) -> None:
        self._outbox.send(req.dst, req)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_soon:
            self._flush_soon = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_soon = False
        try:
            self._outbox.flush()
        except OSError:
            self._close()
            return
        for server in self._outbox.backlogged():
            if server not in self._watched:
                self._watched.add(server)
                self._loop.add_writer(self._outbox.direct[server].fileno(),
                                      self._on_direct_writable, server)

    def _on_direct_writable(self, server: int) -> None:
        """The pipe to ``server`` takes more of what it held back."""
        self._outbox.write_backlog(server)
        if server not in self._outbox.backlogged():
            self._unwatch(server)

    def _unwatch(self, server: int) -> None:
        if server in self._watched:
            self._watched.discard(server)
            self._loop.remove_writer(self._outbox.direct[server].fileno())

    def _sweep_by(self, when: float) -> None:
        """Make sure a sweep runs at ``when`` (loop time) or before, but not
        sooner than :data:`SWEEP_EVERY_S` from now."""
        when = max(when, self._loop.time() + SWEEP_EVERY_S)
        if when < self._sweep_at:
            if self._sweep is not None:
                self._sweep.cancel()
            self._sweep = self._loop.call_at(when, self._on_sweep)
            self._sweep_at = when

    def _on_sweep(self) -> None:
        """Expire the calls past their time, let clerks past their resend
        deadline resend, then sleep until the next deadline of any call."""
        self._sweep, self._sweep_at = None, float("inf")
        now, now_clock_ms = self._loop.time(), now_ms()
        earliest = float("inf")
        for call in list(self._busy.values()):
            if call.future.done():
                continue
            if now >= call.expires_at:
                call.future.set_exception(ClusterTimeout(
                    f"the cluster did not answer within {call.timeout_s:g} s"))
                continue
            call.clerk.on_timer(now_clock_ms)
            earliest = min(earliest, _due_at(call))
        if earliest != float("inf"):
            self._sweep_by(earliest)

    def _on_readable(self) -> None:
        try:
            messages = receive(self._reader)
        except (EOFError, OSError):
            self._close()
            return
        self._take(messages)

    def _on_direct_readable(self, server: int) -> None:
        try:
            messages = receive(self._direct_readers[server])
        except (EOFError, OSError):  # the server died: reach it by the router from now on
            self._drop_direct(server)
            return
        self._take(messages)

    def _drop_direct(self, server: int) -> None:
        self._unwatch(server)
        reader = self._direct_readers.pop(server)
        self._loop.remove_reader(reader.fileno())
        reader.close()
        self._outbox.drop_direct(server)

    def _take(self, messages: list[object]) -> None:
        for msg in messages:
            if isinstance(msg, ClientReply):
                self._on_reply(msg)

    def _on_reply(self, reply: ClientReply) -> None:
        call = self._busy.get(reply.client_id)
        if call is None:
            return
        outcome = call.clerk.on_reply(reply, now_ms())
        if outcome is None:
            self._sweep_by(_due_at(call))  # refused: the clerk resends after a backoff
            return
        if reply.src != self._leader:  # a new leader: point every busy clerk at it
            self._leader = reply.src
            for other in self._busy.values():
                other.clerk.follow_leader(reply.src)
        if not call.future.done():
            call.future.set_result(outcome)

    def _close(self) -> None:
        self._loop.remove_reader(self._conn.fileno())
        self._reader.close()
        for server in list(self._direct_readers):
            self._drop_direct(server)
        self.closed.set()
