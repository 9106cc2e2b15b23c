"""What a leader knows about each follower's log, and its flow control.

A follower is in one of three states:

* ``PROBE``: we do not know where its log matches ours. One AppendEntries
  at a time; the next waits for an answer or a heartbeat response.
* ``REPLICATE``: it matches up to ``match``; entries stream to it as soon
  as they are proposed, up to ``max_inflight`` messages ahead of its acks.
* ``SNAPSHOT``: it needs entries we compacted away; an InstallSnapshot is
  on its way and nothing else is sent until it is answered.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field


class PeerState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


@dataclass(slots=True)
class Progress:
    next: int
    match: int = 0
    state: PeerState = PeerState.PROBE
    probe_sent: bool = False
    inflight: deque[int] = field(default_factory=deque)
    pending_snapshot: int = 0
    snapshot_sent_tick: int = 0
    last_heard_tick: int = 0
    progress_tick: int = 0
    commit_sent: int = 0
    read_seq_acked: int = 0
    recovering: bool = False  # lost its storage; its acks and liveness do not count

    def become_probe(self) -> None:
        if self.state is PeerState.SNAPSHOT:
            self.next = max(self.match + 1, self.pending_snapshot + 1)
        else:
            self.next = self.match + 1
        self.state = PeerState.PROBE
        self.probe_sent = False
        self.inflight.clear()
        self.pending_snapshot = 0

    def become_replicate(self) -> None:
        self.state = PeerState.REPLICATE
        self.next = self.match + 1
        self.inflight.clear()

    def become_snapshot(self, index: int, tick: int) -> None:
        self.state = PeerState.SNAPSHOT
        self.pending_snapshot = index
        self.snapshot_sent_tick = tick
        self.inflight.clear()

    def update_match(self, index: int, tick: int) -> bool:
        """Record an acknowledged match; True when it is news."""
        if index <= self.match:
            return False
        self.match = index
        self.next = max(self.next, index + 1)
        self.progress_tick = tick
        while self.inflight and self.inflight[0] <= index:
            self.inflight.popleft()
        return True

    def is_paused(self, max_inflight: int) -> bool:
        if self.state is PeerState.PROBE:
            return self.probe_sent
        if self.state is PeerState.REPLICATE:
            return len(self.inflight) >= max_inflight
        return True

    def sent_entries(self, last: int | None, tick: int) -> None:
        """An AppendEntries ending at ``last`` (None: no entries) left for
        this follower at ``tick``."""
        if self.state is PeerState.REPLICATE:
            assert last is not None
            # Invariant: we only stream entries beyond what was already sent.
            assert last >= self.next, (last, self.next)
            if not self.inflight:
                self.progress_tick = tick
            self.next = last + 1
            self.inflight.append(last)
        else:
            self.probe_sent = True
