"""The client side of the record store.

A :class:`Clerk` turns one operation at a time into requests to the
servers: it stamps each write with the clerk's id and the next sequence
number (so a retried write takes effect once), remembers who led last, and
retries across servers with a capped back-off until an answer comes.

It does no I/O and reads no clock: the host calls :meth:`Clerk.start`,
:meth:`Clerk.on_reply` and :meth:`Clerk.on_timer` with the current time and
sends what the clerk hands to ``send``. The simulator drives it with virtual
time; the lab's clerk processes drive it from their event loop.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from .core.messages import NO_NODE
from .protocol import FINAL, ClientReply, ClientRequest, Outcome, Record, StoreOp


@dataclass(frozen=True, slots=True)
class ClerkTiming:
    """How long to wait for an answer, and how to back off. Milliseconds."""

    request_timeout_ms: int = 500
    backoff_ms_min: int = 10
    backoff_ms_max: int = 200


@dataclass(frozen=True, slots=True)
class Finished:
    """A finished operation: ``status`` is one of
    :data:`mydns_lab.protocol.FINAL` (never a retry); the other fields
    are the final :class:`~mydns_lab.protocol.ClientReply`'s."""

    op: StoreOp
    status: str
    value: str
    attempts: int
    records: tuple[Record, ...] = ()
    outcome: str = Outcome.NONE
    serial: int = 0
    full: bool = False
    more: bool = False


class Clerk:
    def __init__(self, client_id: int, servers: tuple[int, ...], rng: random.Random,
                 send: Callable[[ClientRequest], None],
                 timing: ClerkTiming = ClerkTiming(), address: int | None = None) -> None:
        """``address`` is where replies are to be sent (default: the
        client id, as in the simulator where each clerk is a node)."""
        self.client_id = client_id
        self.address = client_id if address is None else address
        self._servers = servers
        self._rng = rng
        self._send = send
        self._timing = timing
        self._seq = 0
        self._leader = servers[rng.randrange(len(servers))]
        self._op: StoreOp | None = None
        self._deadline_ms: int | None = None
        self._attempts = 0
        self._failures_in_row = 0
        self._awaiting_reply = False

    @property
    def busy(self) -> bool:
        return self._op is not None

    @property
    def deadline_ms(self) -> int | None:
        """When :meth:`on_timer` next needs calling (None: idle)."""
        return self._deadline_ms

    def start(self, op: StoreOp, now_ms: int) -> None:
        """Begin ``op``; only one operation is in progress at a time."""
        assert self._op is None, "a clerk runs one operation at a time"
        self._op = op
        self._seq += 1
        self._attempts = 0
        self._failures_in_row = 0
        self._transmit(now_ms)

    def on_reply(self, reply: ClientReply, now_ms: int) -> Finished | None:
        """Feed an answer; returns the outcome once the operation is done."""
        if self._op is None or reply.client_id != self.client_id or reply.seq != self._seq:
            return None  # a late answer to an earlier attempt or operation
        if reply.status in FINAL:
            finished = Finished(self._op, reply.status, reply.value, self._attempts, reply.records,
                                reply.outcome, reply.serial, reply.full, reply.more)
            self._leader = reply.src
            self._op = None
            self._deadline_ms = None
            return finished
        if reply.src != self._leader:
            return None  # a refusal from a server we already gave up on
        hint = reply.leader_hint
        if hint != NO_NODE and hint != reply.src and hint in self._servers:
            self._leader = hint
            self._transmit(now_ms)
        else:
            self._next_server()
            self._deadline_ms = now_ms + self._backoff_ms()
        return None

    def follow_leader(self, node: int) -> None:
        """Another clerk of the same host just had an answer from ``node``
        as leader: aim this clerk's next attempt there instead of hunting
        through the servers one timeout at a time (after a leader change a
        clerk whose leader died would otherwise try every server in turn).
        An attempt already sent to ``node`` is left to run."""
        if node == self._leader or node not in self._servers:
            return
        self._leader = node
        self._awaiting_reply = False  # the next timer resends to node, not past it

    def abandon(self) -> None:
        """Give up on the current operation (its outcome stays unknown); the
        next one gets a higher sequence number, so a late copy of this one
        can still take effect at most once."""
        self._op = None
        self._deadline_ms = None

    def on_timer(self, now_ms: int) -> None:
        """Call when ``deadline_ms`` has passed: resend, to another server
        if the last one did not answer in time."""
        if self._op is None or self._deadline_ms is None or now_ms < self._deadline_ms:
            return
        if self._awaiting_reply:
            self._next_server()  # no answer in time: that server may be down
        self._transmit(now_ms)

    # --- internals ------------------------------------------------------------------

    def _transmit(self, now_ms: int) -> None:
        assert self._op is not None
        self._attempts += 1
        self._awaiting_reply = True
        self._deadline_ms = now_ms + self._timing.request_timeout_ms
        self._send(ClientRequest(self.address, self._leader, self.client_id, self._seq,
                                 self._op))

    def _next_server(self) -> None:
        index = self._servers.index(self._leader) if self._leader in self._servers else -1
        self._leader = self._servers[(index + 1) % len(self._servers)]
        self._failures_in_row += 1
        self._awaiting_reply = False

    def _backoff_ms(self) -> int:
        """Grows with each full round of refusals, capped; jittered so that
        clerks do not retry in lock step."""
        rounds = self._failures_in_row // len(self._servers)
        ceiling = min(self._timing.backoff_ms_max, self._timing.backoff_ms_min * (2 ** rounds))
        return self._rng.randint(self._timing.backoff_ms_min // 2 + 1, max(ceiling, 2))
