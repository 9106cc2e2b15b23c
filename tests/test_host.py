"""The order in which a host handles a Ready (mydns_lab.host.handle_ready):
what promises nothing leaves, and is flushed, before the batch is
persisted; votes and acknowledgements only after it.

Replay: ``pytest tests/test_host.py``.
"""

from __future__ import annotations

from typing import Any

from mydns_lab.core.messages import (AppendEntries, AppendEntriesResponse, Entry, HardState,
                                     InstallSnapshot, RaftMessage, Snapshot)
from mydns_lab.host import handle_ready
from mydns_lab.raft import Ready
from mydns_lab.storage.base import MemoryStorage


class OneReady:
    """Stands in for a RaftNode that has exactly one Ready to give."""

    def __init__(self, ready: Ready, events: list[str]) -> None:
        self._ready: Ready | None = ready
        self._events = events

    def ready(self) -> Ready | None:
        ready, self._ready = self._ready, None
        return ready

    def advance(self, _ready: Ready) -> None:
        self._events.append("advance")


class RecordingStorage(MemoryStorage):
    def __init__(self, events: list[str]) -> None:
        super().__init__()
        self._events = events

    def save(self, *args: Any, **kwargs: Any) -> None:
        self._events.append("save")
        super().save(*args, **kwargs)


def run(ready: Ready) -> list[str]:
    events: list[str] = []

    def send(msg: RaftMessage) -> None:
        events.append(f"send {type(msg).__name__}")

    handle_ready(OneReady(ready, events), RecordingStorage(events), send,  # type: ignore[arg-type]
                 lambda _rd: events.append("apply"), lambda: events.append("flush"))
    return events


ENTRY = Entry(term=2, index=1, data=b"x")


def test_replication_is_flushed_before_the_fsync_and_acknowledgements_after() -> None:
    ready = Ready(hard_state=HardState(term=2, vote=1, commit=0), entries=[ENTRY], messages=[
        AppendEntries(term=2, src=1, dst=2, prev_index=0, prev_term=0, entries=(ENTRY,),
                      commit=0),
        AppendEntriesResponse(term=2, src=1, dst=3, success=True, match_index=1)])
    assert run(ready) == ["send AppendEntries", "flush", "save", "send AppendEntriesResponse",
                          "apply", "advance"]


def test_nothing_to_flush_early_when_every_message_promises() -> None:
    ready = Ready(entries=[ENTRY], messages=[
        AppendEntriesResponse(term=2, src=2, dst=1, success=True, match_index=1)])
    assert run(ready) == ["save", "send AppendEntriesResponse", "apply", "advance"]


def test_no_early_flush_when_the_save_only_moves_the_commit_index() -> None:
    """Such a save writes nothing the followers' disks could overlap, and an
    early flush would put the commit notices ahead of the clients' replies
    that apply queues."""
    ready = Ready(hard_state=HardState(term=2, vote=1, commit=1), committed_entries=[ENTRY],
                  messages=[AppendEntries(term=2, src=1, dst=2, prev_index=1, prev_term=2,
                                          entries=(), commit=1)])
    assert run(ready) == ["send AppendEntries", "save", "apply", "advance"]


def _sent_snapshots(stored: Snapshot, named: Snapshot) -> list[RaftMessage]:
    """What leaves when the node sends ``named`` (no bytes, as a node keeps
    a durable snapshot) while storage holds ``stored``."""
    storage = MemoryStorage()
    storage.save(None, [], stored)
    sent: list[RaftMessage] = []
    message = InstallSnapshot(term=2, src=1, dst=2, snapshot=named)
    handle_ready(OneReady(Ready(messages=[message]), []), storage,  # type: ignore[arg-type]
                 sent.append, lambda _rd: None)
    return sent


def test_a_snapshot_leaves_with_the_bytes_storage_holds() -> None:
    stored = Snapshot(5, 2, b"state@5")
    assert _sent_snapshots(stored, stored.without_data()) == [
        InstallSnapshot(term=2, src=1, dst=2, snapshot=stored)]


def test_a_snapshot_storage_has_replaced_is_not_sent() -> None:
    """The leader sends again after its snapshot timeout, naming the new one."""
    assert _sent_snapshots(Snapshot(7, 2, b"state@7"), Snapshot(5, 2)) == []
