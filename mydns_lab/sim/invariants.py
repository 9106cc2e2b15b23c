"""Safety invariants of Raft and the record store, checked as events happen.

The simulator reports what it observes (role changes, entries persisted,
entries applied) and :class:`SafetyChecker` raises :class:`InvariantViolation`
the moment a report contradicts an earlier one:

* election safety: at most one leader per term;
* log matching: two entries with the same index and term carry the same
  command and follow the same term, so the logs agree on the whole prefix;
* leader completeness: a new leader holds every entry already applied
  anywhere (applied means committed);
* state machine safety: every node applies the same command at each index,
  with the same effect;
* exactly-once: no client request takes effect at two indexes.

Each check costs a dictionary lookup per entry, so it runs after every event.
"""

from __future__ import annotations

from ..core.log import RaftLog
from ..core.messages import Entry
from ..protocol import Command


class InvariantViolation(AssertionError):
    """A safety property failed; the message names it and the evidence."""


class SafetyChecker:
    def __init__(self) -> None:
        self._leader_of_term: dict[int, int] = {}
        self._entry_shape: dict[tuple[int, int], tuple[bytes, int]] = {}  # (index, term) -> (data, prev term)
        self._applied: list[tuple[int, bytes, bool]] = [(0, b"", False)]  # by index
        self._effective_at: dict[tuple[int, int], int] = {}  # (client, seq) -> index

    def leader_elected(self, node: int, term: int, log: RaftLog) -> None:
        known = self._leader_of_term.setdefault(term, node)
        if known != node:
            raise InvariantViolation(
                f"election safety: s{known} and s{node} both led term {term}")
        self._check_completeness(node, term, log)

    def entries_persisted(self, node: int, entries: list[Entry], prev_term: int) -> None:
        for entry in entries:
            shape = (entry.data, prev_term)
            known = self._entry_shape.setdefault((entry.index, entry.term), shape)
            if known != shape:
                raise InvariantViolation(
                    f"log matching: s{node} holds a different entry at index {entry.index} "
                    f"term {entry.term} (data {entry.data[:40]!r} after term {prev_term}, "
                    f"elsewhere {known[0][:40]!r} after term {known[1]})")
            prev_term = entry.term

    def entry_applied(self, node: int, entry: Entry, cmd: Command | None, effective: bool) -> None:
        record = (entry.term, entry.data, effective)
        if entry.index < len(self._applied):
            known = self._applied[entry.index]
            if known != record:
                raise InvariantViolation(
                    f"state machine safety: s{node} applied term {entry.term} "
                    f"{entry.data[:40]!r} (effective={effective}) at index {entry.index}, "
                    f"another node term {known[0]} {known[1][:40]!r} (effective={known[2]})")
            return
        if entry.index != len(self._applied):
            raise InvariantViolation(
                f"state machine safety: s{node} applied index {entry.index} before "
                f"index {len(self._applied)} was applied anywhere")
        self._applied.append(record)
        if cmd is not None and effective:
            key = (cmd.client_id, cmd.seq)
            earlier = self._effective_at.setdefault(key, entry.index)
            if earlier != entry.index:
                raise InvariantViolation(
                    f"exactly-once: client {cmd.client_id} request {cmd.seq} took effect "
                    f"at index {earlier} and again at {entry.index}")

    @property
    def applied_count(self) -> int:
        return len(self._applied) - 1

    def applied_data(self, index: int) -> bytes:
        return self._applied[index][1]

    def _check_completeness(self, node: int, term: int, log: RaftLog) -> None:
        last_applied = len(self._applied) - 1
        if log.last_index < last_applied:
            raise InvariantViolation(
                f"leader completeness: s{node} leads term {term} with log ending at "
                f"{log.last_index} but index {last_applied} was already applied")
        for index in range(log.snapshot.index + 1, last_applied + 1):
            term_applied, data, _ = self._applied[index]
            if log.term_at(index) != term_applied or log.entry(index).data != data:
                raise InvariantViolation(
                    f"leader completeness: s{node} leads term {term} without the entry "
                    f"applied at index {index} (term {term_applied})")
