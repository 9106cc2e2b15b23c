"""The simulator's network: a heap of messages in flight and the fault layer.

Every choice (loss, delay, duplication) comes from the rng it is given, so
one seed gives one history. Links are directed: cutting ``(a, b)`` stops
messages from ``a`` to ``b`` only, which is how asymmetric partitions are
made. Pure: time is whatever the simulator says it is.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from typing import Any, Callable

from ..net.faults import REPLY_TYPES, LinkFaults, message_fate


@dataclass(slots=True)
class NetStats:
    sent: int = 0
    delivered: int = 0
    dropped: int = 0
    duplicated: int = 0
    bytes_sent: int = 0
    by_type: dict[str, int] = field(default_factory=dict)


class SimNetwork:
    def __init__(self, rng: random.Random, size_of: Callable[[Any], int] | None = None) -> None:
        """``size_of`` gives a message's encoded size, to count bytes sent
        (None: bytes are not counted, the simulator's fast default)."""
        self._rng = rng
        self._heap: list[tuple[int, int, Any]] = []
        self._seq = 0
        self.faults = LinkFaults(delay_ms_min=1, delay_ms_max=5)
        self.cut: set[tuple[int, int]] = set()
        self.stats = NetStats()
        self._size_of = size_of

    def send(self, msg: Any, now_ms: int) -> None:
        """Queue ``msg`` (which has ``src`` and ``dst``) for delivery."""
        stats = self.stats
        stats.sent += 1
        name = type(msg).__name__
        stats.by_type[name] = stats.by_type.get(name, 0) + 1
        if self._size_of is not None:
            stats.bytes_sent += self._size_of(msg)
        if (msg.src, msg.dst) in self.cut:
            stats.dropped += 1
            return
        delays = message_fate(self._rng, self.faults, name in REPLY_TYPES)
        if not delays:
            stats.dropped += 1
        stats.duplicated += len(delays) > 1
        for delay in delays:
            self._seq += 1
            heapq.heappush(self._heap, (now_ms + delay, self._seq, msg))

    def next_time(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now_ms: int) -> list[Any]:
        """Messages whose delivery time has come, in delivery order. A link
        cut while a message was in flight drops it on arrival."""
        due = []
        while self._heap and self._heap[0][0] <= now_ms:
            _, _, msg = heapq.heappop(self._heap)
            if (msg.src, msg.dst) in self.cut:
                self.stats.dropped += 1
                continue
            self.stats.delivered += 1
            due.append(msg)
        return due

    def cut_between(self, group_a: set[int], group_b: set[int], both_ways: bool = True) -> None:
        for a in group_a:
            for b in group_b:
                self.cut.add((a, b))
                if both_ways:
                    self.cut.add((b, a))

    def heal(self) -> None:
        self.cut.clear()
