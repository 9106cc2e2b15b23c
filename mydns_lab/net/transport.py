"""Pipes between the lab's processes: batched envelopes over a Connection.

Every process talks to the router through one duplex
``multiprocessing`` pipe. A process collects what it sends during one turn
of its loop in an :class:`Outbox` and writes it as a single frame, so a
Ready batch of twenty messages costs one write, not twenty.
"""

from __future__ import annotations

from multiprocessing.connection import Connection
from typing import Any, Callable

from ..codec import DecodeError, Envelope, decode, encode, pack_envelopes, unpack_envelopes

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
