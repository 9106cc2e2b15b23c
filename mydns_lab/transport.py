"""Pipes between the lab's processes: batched envelopes over a Connection.

Every process talks to the router through one duplex
``multiprocessing`` pipe. A process collects what it sends during one turn
of its loop in an :class:`Outbox` and writes it as a single frame, so a
Ready batch of twenty messages costs one write, not twenty.
"""

from __future__ import annotations

from multiprocessing.connection import Connection
from typing import Any

from .messages import Envelope, decode, encode, pack_envelopes, unpack_envelopes

LAUNCHER = 0
"""Address of the launcher: status reports go there, outside the fault layer."""


class Outbox:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._pending: list[Envelope] = []

    def send(self, dst: int, msg: Any) -> None:
        self._pending.append((dst, type(msg).__name__, encode(msg)))

    def flush(self) -> None:
        """Write everything queued as one frame. Raises OSError (or EOFError)
        when the other end is gone."""
        if self._pending:
            batch, self._pending = self._pending, []
            self._conn.send_bytes(pack_envelopes(batch))


def receive(conn: Connection) -> list[Any]:
    """Decode every message waiting on ``conn`` without blocking."""
    messages = []
    while conn.poll(0):
        for _, _, payload in unpack_envelopes(conn.recv_bytes()):
            messages.append(decode(payload))
    return messages
