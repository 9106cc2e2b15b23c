"""The fault layer: what an unreliable network does to one message.

Shared by the simulator's network and the lab's router, so both mean the
same thing by "10 % loss". Pure: the rng is passed in.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

REPLY_TYPES = frozenset({"RequestVoteResponse", "AppendEntriesResponse", "HeartbeatResponse",
                         "ClientReply"})
"""Message type names that answer another message: the classic lab's long
reordering holds only these."""


@dataclass(slots=True)
class LinkFaults:
    """Per-message fault rates. Delays in milliseconds.

    ``long_delay`` is the chance a message is held for ``long_delay_ms_min``
    to ``long_delay_ms_max`` instead of the normal delay, which reorders it
    behind later ones; with ``long_delay_replies_only`` only replies are
    held (the classic lab's long reordering).
    """

    loss: float = 0.0
    duplicate: float = 0.0
    delay_ms_min: int = 0
    delay_ms_max: int = 0
    long_delay: float = 0.0
    long_delay_ms_min: int = 200
    long_delay_ms_max: int = 2_200
    long_delay_replies_only: bool = False

    @classmethod
    def classic_unreliable(cls, long_reordering: bool = False) -> LinkFaults:
        """The classic lab's unreliable network: 0-26 ms delay, 10 % of
        messages dropped; optionally 2/3 of replies held 200-2,200 ms."""
        return cls(loss=0.1, delay_ms_min=0, delay_ms_max=26,
                   long_delay=2 / 3 if long_reordering else 0.0,
                   long_delay_replies_only=True)


def message_fate(rng: random.Random, faults: LinkFaults, is_reply: bool) -> tuple[int, ...]:
    """Delays (ms) after which copies of a message arrive: () when it is
    lost, two values when it is duplicated."""
    if faults.loss and rng.random() < faults.loss:
        return ()
    copies = 2 if faults.duplicate and rng.random() < faults.duplicate else 1
    return tuple(_delay(rng, faults, is_reply) for _ in range(copies))


def _delay(rng: random.Random, faults: LinkFaults, is_reply: bool) -> int:
    may_hold = is_reply or not faults.long_delay_replies_only
    if faults.long_delay and may_hold and rng.random() < faults.long_delay:
        return rng.randint(faults.long_delay_ms_min, max(faults.long_delay_ms_min,
                                                          faults.long_delay_ms_max))
    if faults.delay_ms_max <= faults.delay_ms_min:
        return faults.delay_ms_min
    return rng.randint(faults.delay_ms_min, faults.delay_ms_max)
