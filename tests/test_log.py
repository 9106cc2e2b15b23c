"""RaftLog on its own: term lookup across the compaction offset, follower
appends with conflict truncation, compaction and restore bounds, and the
two searches behind the fast back-up hint."""

from __future__ import annotations

import pytest

from mydns_lab.core.log import RaftLog
from mydns_lab.core.messages import Entry, Snapshot
from tests.rafttest import entries


def log_of(terms: list[int], snapshot: Snapshot = Snapshot(), commit: int = 0) -> RaftLog:
    return RaftLog(snapshot, entries(terms, snapshot.index + 1), commit)


def test_term_at_covers_snapshot_index_entries_and_nothing_else() -> None:
    log = log_of([2, 3, 3], Snapshot(3, 2, b"s"))
    assert [log.term_at(i) for i in range(8)] == [None, None, None, 2, 2, 3, 3, None]
    assert (log.first_index, log.last_index, log.last_term) == (4, 6, 3)
    assert log_of([]).term_at(0) == 0 and log_of([]).last_term == 0
    assert log_of([], Snapshot(5, 4)).last_term == 4


def test_new_log_counts_all_given_entries_stable_and_clamps_commit() -> None:
    log = log_of([1, 1, 2], commit=9)
    assert (log.committed, log.applied, log.stable) == (3, 0, 3)
    assert log.unstable_entries() == []
    assert log_of([1], Snapshot(4, 1), commit=2).committed == 4
    with pytest.raises(AssertionError):
        RaftLog(Snapshot(4, 1), entries([1], start=6), 0)  # gap after the snapshot


def test_append_after_truncates_at_first_conflict_and_replaces() -> None:
    log = log_of([1, 1, 2, 2, 2])
    # index 3 matches by term (kept as is), index 4 conflicts (cut from there)
    assert log.append_after(2, [Entry(2, 3, b"other"), Entry(3, 4, b"y")]) == 4
    assert [log.term_at(i) for i in range(1, 6)] == [1, 1, 2, 3, None]
    assert log.stable == 3 and log.unstable_entries() == [Entry(3, 4, b"y")]
    assert log.entry(3) == Entry(2, 3, b"e3"), "a matching entry is kept, not replaced"


def test_append_after_keeps_longer_matching_log_and_appends_past_the_end() -> None:
    log = log_of([1, 1, 1, 1])
    assert log.append_after(1, entries([1], 2)) == 2, "returns the last index it vouches for"
    assert log.last_index == 4 and log.unstable_entries() == []
    assert log.append_after(4, entries([2, 2], 5)) == 6
    assert log.unstable_entries() == entries([2, 2], 5)
    assert log.append_after(6, []) == 6


def test_append_after_never_overwrites_a_committed_entry() -> None:
    log = log_of([1, 1, 1], commit=2)
    with pytest.raises(AssertionError):
        log.append_after(1, [Entry(2, 2)])


def test_leader_append_only_at_the_end() -> None:
    log = log_of([1])
    log.append([Entry(1, 2)])
    assert log.last_index == 2
    with pytest.raises(AssertionError):
        log.append([Entry(1, 2)])


def test_commit_and_apply_move_forward_only_within_bounds() -> None:
    log = log_of([1, 1, 1])
    assert log.commit_to(2) and not log.commit_to(1) and log.committed == 2
    with pytest.raises(AssertionError):
        log.commit_to(4)
    assert log.committed_unapplied() == entries([1, 1])
    log.applied_to(2)
    assert log.committed_unapplied() == []
    with pytest.raises(AssertionError):
        log.applied_to(3)  # past commit


def test_compact_drops_covered_entries_within_bounds() -> None:
    log = log_of([1, 1, 2, 2], commit=3)
    log.applied_to(3)
    with pytest.raises(AssertionError):
        log.compact(Snapshot(4, 2))  # not applied yet
    with pytest.raises(AssertionError):
        log.compact(Snapshot(3, 1))  # wrong term for index 3
    log.compact(Snapshot(2, 1, b"s"))
    assert (log.first_index, log.last_index, log.snapshot_unsaved) == (3, 4, True)
    assert log.term_at(1) is None and log.term_at(2) == 1
    with pytest.raises(AssertionError):
        log.compact(Snapshot(2, 1))  # not beyond the current snapshot
    with pytest.raises(AssertionError):
        log.entries_between(2, 4)  # compacted away
    assert log.entries_between(3, 4) == entries([2, 2], 3)


def test_restore_replaces_everything_but_never_goes_below_commit() -> None:
    log = log_of([1, 1, 2], commit=2)
    with pytest.raises(AssertionError):
        log.restore(Snapshot(2, 1))
    log.restore(Snapshot(9, 3, b"s"))
    assert (log.first_index, log.last_index, log.last_term) == (10, 9, 3)
    assert (log.committed, log.applied, log.stable) == (9, 9, 9)
    assert log.snapshot_unsaved and log.unstable_entries() == []


def test_entries_between_caps_bytes_but_returns_at_least_one() -> None:
    log = RaftLog(Snapshot(), [Entry(1, i, b"x" * 100) for i in (1, 2, 3)], 0)
    assert len(log.entries_between(1, 3, max_bytes=1)) == 1
    assert len(log.entries_between(1, 3, max_bytes=2 * 116)) == 2
    assert len(log.entries_between(1, 3)) == 3
    assert log.entries_between(4, 9) == []


@pytest.mark.parametrize("index, first", [(1, 1), (2, 1), (3, 3), (5, 3), (6, 6)])
def test_first_index_of_term_at(index: int, first: int) -> None:
    assert log_of([1, 1, 2, 2, 2, 3]).first_index_of_term_at(index) == first


def test_first_index_of_term_at_stops_at_the_compaction_offset() -> None:
    log = log_of([2, 2, 3], Snapshot(4, 2))
    assert log.first_index_of_term_at(6) == 5
    assert log.first_index_of_term_at(4) == 4


@pytest.mark.parametrize("term, at_most, found", [
    (2, 6, 5), (2, 4, 4), (1, 6, 2), (3, 6, 6), (3, 5, None), (4, 6, None),
    (2, 99, 5), (0, 6, 0),
])
def test_last_index_of_term(term: int, at_most: int, found: int | None) -> None:
    assert log_of([1, 1, 2, 2, 2, 3]).last_index_of_term(term, at_most) == found


def test_last_index_of_term_absent_between_and_below_snapshot() -> None:
    log = log_of([1, 1, 3, 3])
    assert log.last_index_of_term(2, 4) is None
    compacted = log_of([3, 3], Snapshot(2, 1))
    assert compacted.last_index_of_term(1, 4) == 2
    assert compacted.last_index_of_term(1, 1) is None


@pytest.mark.parametrize("last_index, last_term, ok", [
    (3, 2, True), (9, 2, True), (2, 2, False), (9, 1, False), (1, 3, True)])
def test_is_up_to_date_compares_last_term_then_length(last_index: int, last_term: int,
                                                      ok: bool) -> None:
    assert log_of([1, 1, 2]).is_up_to_date(last_index, last_term) is ok
