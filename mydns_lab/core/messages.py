"""The Raft core's messages and persisted records.

Frozen, slotted dataclasses, so that the core dispatches on types with
``match`` instead of on dict keys. Turning them into bytes is
:mod:`mydns_lab.codec`'s job; this module imports nothing impure.

Node ids are small positive ints (``1..n``); ``0`` means "nobody" (no vote,
no known leader).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

NO_NODE = 0



@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry. ``data`` is opaque to Raft; empty data is a no-op."""

    term: int
    index: int
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class HardState:
    """What a node must find again after a crash, besides its log."""

    term: int = 0
    vote: int = NO_NODE
    commit: int = 0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state machine as of ``index`` (whose entry had ``term``)."""

    index: int = 0
    term: int = 0
    data: bytes = b""

    def without_data(self) -> Snapshot:
        """The same snapshot named by index and term alone: what a node
        keeps once storage holds the bytes (see :mod:`mydns_lab.raft`)."""
        return Snapshot(self.index, self.term)


# --- Raft RPCs ---------------------------------------------------------------
#
# Every message names its sender ``src``, its receiver ``dst`` and the
# sender's ``term``.


@dataclass(frozen=True, slots=True)
class RequestVote:
    """A (pre-)candidate asks for a vote in ``term``.

    For a pre-vote, ``term`` is the term the sender *would* campaign in; the
    sender has not moved to it and receivers do not either.
    """

    term: int
    src: int
    dst: int
    last_index: int
    last_term: int
    pre_vote: bool = False


@dataclass(frozen=True, slots=True)
class RequestVoteResponse:
    term: int
    src: int
    dst: int
    granted: bool
    pre_vote: bool = False


@dataclass(frozen=True, slots=True)
class AppendEntries:
    """Entries after ``(prev_index, prev_term)``; empty ``entries`` only probes.

    ``probe``: the leader waits for this one's answer before sending more;
    otherwise (streaming) a follower that lacks ``prev_index`` keeps it
    silently until the appends before it arrive.
    """

    term: int
    src: int
    dst: int
    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...]
    commit: int
    probe: bool = False


@dataclass(frozen=True, slots=True)
class AppendEntriesResponse:
    """Answer to AppendEntries or InstallSnapshot.

    On success ``match_index`` is the last index known to match the leader.
    On rejection ``rejected_index`` is the ``prev_index`` that did not match,
    and the fast back-up hint is ``conflict_term`` (0 when the follower's log
    is too short) with ``conflict_index``, the first index the follower holds
    of that term (or its last index + 1). ``recovering``: the sender lost its
    storage and is catching up, so its acknowledgements must not count.
    """

    term: int
    src: int
    dst: int
    success: bool
    match_index: int = 0
    rejected_index: int = 0
    conflict_term: int = 0
    conflict_index: int = 0
    recovering: bool = False


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Leader liveness; ``commit`` is capped at what ``dst`` is known to hold.

    ``read_seq`` is the newest ReadIndex round this heartbeat confirms.
    """

    term: int
    src: int
    dst: int
    commit: int
    read_seq: int = 0


@dataclass(frozen=True, slots=True)
class HeartbeatResponse:
    term: int
    src: int
    dst: int
    read_seq: int = 0
    recovering: bool = False


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    term: int
    src: int
    dst: int
    snapshot: Snapshot


@dataclass(frozen=True, slots=True)
class TermQuery:
    """A node that lost its storage asks ``dst`` for its current term.

    Part of the survey that must end before a wiped node votes again (see
    :class:`mydns_lab.core.recovery.TermSurvey`). ``survey`` names the
    survey, so a report that answers an earlier one (an earlier wipe, an
    earlier incarnation) is not counted in this one. Answered whatever
    the sender's term.
    """

    term: int
    src: int
    dst: int
    survey: int


@dataclass(frozen=True, slots=True)
class TermReport:
    """Answer to :class:`TermQuery`: ``term`` is the sender's current term,
    durable before this report leaves (it is sent after the Ready that holds
    it is persisted)."""

    term: int
    src: int
    dst: int
    survey: int


RaftMessage = Union[
    RequestVote,
    RequestVoteResponse,
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    TermQuery,
    TermReport,
]
