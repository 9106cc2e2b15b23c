"""The Raft log as one node holds it in memory.

A compaction offset (the snapshot), the entries after it, and four indexes
with a fixed order::

    snapshot.index <= applied <= committed,    stable <= last_index

``stable`` is the last index durable in storage; entries after it are handed
out by :meth:`RaftLog.unstable_entries` until the host reports them saved.
Pure: no I/O, no clock.
"""

from __future__ import annotations

from typing import Sequence

from .messages import Entry, Snapshot


class RaftLog:
    def __init__(self, snapshot: Snapshot, entries: Sequence[Entry], commit: int) -> None:
        """Rebuild from durable state; every given entry counts as stable."""
        self.snapshot = snapshot
        self._entries: list[Entry] = list(entries)
        if self._entries:
            # Invariant: entries follow the snapshot without a gap.
            assert self._entries[0].index == snapshot.index + 1, (self._entries[0], snapshot)
        self.committed = min(max(commit, snapshot.index), self.last_index)
        self.applied = snapshot.index
        self.stable = self.last_index
        self.snapshot_unsaved = False

    # --- reading -----------------------------------------------------------

    @property
    def first_index(self) -> int:
        """Lowest index still held as an entry."""
        return self.snapshot.index + 1

    @property
    def last_index(self) -> int:
        return self.snapshot.index + len(self._entries)

    @property
    def last_term(self) -> int:
        return self._entries[-1].term if self._entries else self.snapshot.term

    def term_at(self, index: int) -> int | None:
        """Term of the entry at ``index``; None when compacted away or absent."""
        if index == self.snapshot.index:
            return self.snapshot.term
        if self.snapshot.index < index <= self.last_index:
            return self._entries[index - self.snapshot.index - 1].term
        return None

    def matches(self, index: int, term: int) -> bool:
        return self.term_at(index) == term

    def entry(self, index: int) -> Entry:
        return self._entries[index - self.snapshot.index - 1]

    def entries_between(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries ``lo..hi`` inclusive, cut after ``max_bytes`` of data
        (always at least one entry when the range is not empty)."""
        assert lo > self.snapshot.index, (lo, self.snapshot.index)
        start = lo - self.snapshot.index - 1
        stop = min(hi, self.last_index) - self.snapshot.index
        if max_bytes is None:
            return self._entries[start:stop]
        taken: list[Entry] = []
        size = 0
        for entry in self._entries[start:stop]:
            size += len(entry.data) + 16
            if taken and size > max_bytes:
                break
            taken.append(entry)
        return taken

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Whether a log ending at (last_index, last_term) is at least as
        up to date as this one (§5.4.1)."""
        return (last_term, last_index) >= (self.last_term, self.last_index)

    def first_index_of_term_at(self, index: int) -> int:
        """First index of the run of entries sharing the term at ``index``."""
        term = self.term_at(index)
        while index - 1 > self.snapshot.index and self.term_at(index - 1) == term:
            index -= 1
        return index

    def last_index_of_term(self, term: int, at_most: int) -> int | None:
        """Last index ``<= at_most`` holding ``term``, or None."""
        index = min(at_most, self.last_index)
        while index >= self.snapshot.index:
            found = self.term_at(index)
            if found == term:
                return index
            if found is None or found < term:
                return None
            index -= 1
        return None

    # --- changing ----------------------------------------------------------

    def append(self, entries: Sequence[Entry]) -> None:
        """Leader-side append of new entries right after the last one."""
        if entries:
            # Invariant: leaders only append at the end.
            assert entries[0].index == self.last_index + 1, (entries[0].index, self.last_index)
            self._entries.extend(entries)

    def append_after(self, prev_index: int, entries: Sequence[Entry]) -> int:
        """Follower-side append: drop our entries that conflict with
        ``entries`` (and everything after them), add the new ones, keep the
        rest. The caller has checked that ``prev_index`` matches. Returns the
        last index now known to match the leader."""
        for i, entry in enumerate(entries):
            ours = self.term_at(entry.index)
            if ours == entry.term:
                continue
            if ours is not None:
                # Invariant: committed entries are never overwritten.
                assert entry.index > self.committed, (entry.index, self.committed)
                del self._entries[entry.index - self.snapshot.index - 1:]
                self.stable = min(self.stable, entry.index - 1)
            self.append(entries[i:])
            break
        return prev_index + len(entries)

    def commit_to(self, index: int) -> bool:
        """Raise the commit index (never lowers it). True when it moved."""
        if index > self.committed:
            # Invariant: only entries we hold can be committed.
            assert index <= self.last_index, (index, self.last_index)
            self.committed = index
            return True
        return False

    def unstable_entries(self) -> list[Entry]:
        return self._entries[self.stable - self.snapshot.index:]

    def stable_to(self, index: int) -> None:
        self.stable = max(self.stable, index)

    def committed_unapplied(self) -> list[Entry]:
        """Committed entries not yet handed to the state machine."""
        return self.entries_between(self.applied + 1, self.committed)

    def applied_to(self, index: int) -> None:
        # Invariant: applied never passes committed.
        assert self.applied <= index <= self.committed, (self.applied, index, self.committed)
        self.applied = index

    def compact(self, snapshot: Snapshot) -> None:
        """The application took ``snapshot`` of applied state: drop entries
        up to its index."""
        assert self.snapshot.index < snapshot.index <= self.applied, (snapshot.index, self.applied)
        assert self.term_at(snapshot.index) == snapshot.term
        del self._entries[:snapshot.index - self.snapshot.index]
        self.snapshot = snapshot
        self.snapshot_unsaved = True

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole log by a snapshot received from the leader."""
        assert snapshot.index > self.committed, (snapshot.index, self.committed)
        self._entries = []
        self.snapshot = snapshot
        self.committed = self.applied = self.stable = snapshot.index
        self.snapshot_unsaved = True
