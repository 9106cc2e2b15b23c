"""Where a Raft node's durable state lives.

The host calls :meth:`Storage.save` with what a Ready batch says to persist
and relies on it being durable when ``save`` returns; only then does it send
the batch's messages. At start-up the host calls :meth:`Storage.load` and
builds the node from the result alone.

:class:`MemoryStorage` serves the simulator and the tests. File storage for
real servers lives in :mod:`mydns_lab.storage.files`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

from ..core.messages import Entry, HardState, Snapshot


@dataclass(slots=True)
class PersistedState:
    """Everything a node is rebuilt from: hard state, snapshot, later entries.

    Invariant: ``entries`` are contiguous and start at ``snapshot.index + 1``.
    """

    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot = field(default_factory=Snapshot)
    entries: list[Entry] = field(default_factory=list)


class Storage(Protocol):
    def load(self) -> PersistedState:
        """The state as of the last ``save`` that returned."""
        ...

    def save(self, hard_state: HardState | None, entries: Sequence[Entry],
             snapshot: Snapshot | None) -> None:
        """Make a Ready batch durable, in this order:

        1. ``snapshot`` (if any) replaces the stored one; entries at or below
           its index are dropped, and so is the whole log when the snapshot
           does not match the stored entry at its index.
        2. ``entries`` (contiguous) replace every stored entry from
           ``entries[0].index`` on, then are appended.
        3. ``hard_state`` (if any) replaces the stored one.

        Durable on return, except ``hard_state.commit``, which storage may
        persist lazily (a restarted node relearns it from the leader): after
        a crash, ``load`` may return an older commit index, never a newer
        one. Raises on failure; the caller must then stop.
        """
        ...

    def size_bytes(self) -> int:
        """Approximate bytes of Raft state held (log and hard state), not
        counting the snapshot: what ``maxraftstate`` bounds."""
        ...

    def snapshot_data(self, index: int) -> bytes | None:
        """The bytes of the stored snapshot when it is the one at ``index``;
        None when another has replaced it. (The node keeps a durable
        snapshot's index and term only, and asks here when it sends one.)"""
        ...

    @property
    def recovering(self) -> bool:
        """True while this storage stands in for one that was lost: the
        node built from it must catch up, and learn the terms of a majority
        of the others, before it votes (see RaftNode). Durable, like the
        rest of the state; it is the only durable trace of a recovery in
        progress, since a node restarted while recovering simply surveys
        again (why that is safe: :mod:`mydns_lab.core.recovery`)."""
        ...

    def end_recovery(self) -> None:
        """The node caught up: clear ``recovering``, durably.
        :func:`mydns_lab.host.handle_ready` calls it once the node says so."""
        ...


ENTRY_OVERHEAD_BYTES = 16
"""Bytes counted per entry on top of its data, for size accounting."""


def apply_save(state: PersistedState, hard_state: HardState | None,
               entries: Sequence[Entry], snapshot: Snapshot | None) -> None:
    """Apply one ``save`` to an in-memory :class:`PersistedState`.

    Shared by every storage so that they agree on the rules above.
    """
    if snapshot is not None:
        kept = [e for e in state.entries if e.index > snapshot.index]
        at_snapshot = [e for e in state.entries if e.index == snapshot.index]
        if not at_snapshot or at_snapshot[0].term != snapshot.term:
            kept = []
        state.snapshot = snapshot
        state.entries = kept
    if entries:
        first = entries[0].index
        offset = state.snapshot.index + 1
        # Invariant: the new entries attach to the stored log or the snapshot.
        assert offset <= first <= offset + len(state.entries), (first, offset, len(state.entries))
        del state.entries[first - offset:]
        state.entries.extend(entries)
    if hard_state is not None:
        state.hard_state = hard_state


class MemoryStorage:
    """Storage in memory, for the simulator and tests.

    ``load`` returns copies, so a node rebuilt from it shares nothing with
    the node that wrote it.
    """

    def __init__(self, recovering: bool = False) -> None:
        self._state = PersistedState()
        self._bytes = 0
        self._recovering = recovering

    def load(self) -> PersistedState:
        return PersistedState(self._state.hard_state, self._state.snapshot,
                              list(self._state.entries))

    def save(self, hard_state: HardState | None, entries: Sequence[Entry],
             snapshot: Snapshot | None) -> None:
        before = self._state.entries
        appends_only = snapshot is None and (
            not entries or entries[0].index == self._state.snapshot.index + len(before) + 1)
        apply_save(self._state, hard_state, entries, snapshot)
        if appends_only:
            self._bytes += sum(len(e.data) + ENTRY_OVERHEAD_BYTES for e in entries)
        else:
            self._bytes = sum(len(e.data) + ENTRY_OVERHEAD_BYTES for e in self._state.entries)

    def size_bytes(self) -> int:
        return self._bytes + ENTRY_OVERHEAD_BYTES

    def snapshot_data(self, index: int) -> bytes | None:
        snapshot = self._state.snapshot
        return snapshot.data if snapshot.index == index else None

    @property
    def recovering(self) -> bool:
        return self._recovering

    def end_recovery(self) -> None:
        self._recovering = False
