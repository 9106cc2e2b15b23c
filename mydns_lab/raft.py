"""The Raft consensus core: a pure state machine of one node.

Nothing here does I/O or reads a clock. The host drives a node with

* :meth:`RaftNode.tick` at a fixed interval (time in the core is ticks),
* :meth:`RaftNode.step` for each message that arrives,
* :meth:`RaftNode.propose` and :meth:`RaftNode.read_index` for clients,
* :meth:`RaftNode.compact` when the application has taken a snapshot,

and after any of those asks :meth:`RaftNode.ready` for a :class:`Ready`
batch, handles it in the order persist -> send -> apply (a leader's
appends, heartbeats and snapshots promise nothing and may leave before it;
see :func:`mydns_lab.host.handle_ready`, the one place that does so), then
calls :meth:`RaftNode.advance`. No other call may come between ``ready`` and
``advance``.

Once a snapshot is durable its bytes belong to storage: the node keeps
only its index and term (100,000 names are megabytes a server would
otherwise hold twice), so an InstallSnapshot it sends carries no bytes and
the host fills them in from storage as it sends (``handle_ready`` again).

Implemented: randomized election timeouts, pre-vote and check-quorum, log
replication with fast conflict back-up, the Figure 8 commit rule, batched
and pipelined appends, snapshots (compaction and InstallSnapshot), ReadIndex
reads. Membership is static.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field
from typing import Callable

from .core.log import RaftLog
from .core.messages import (NO_NODE, AppendEntries, AppendEntriesResponse, Entry, HardState,
                            Heartbeat, HeartbeatResponse, InstallSnapshot, RaftMessage, RequestVote,
                            RequestVoteResponse, Snapshot, TermQuery, TermReport)
from .core.progress import PeerState, Progress
from .core.quorum import VoteResult, committed_index, majority, vote_result
from .core.recovery import TermSurvey
from .storage.base import PersistedState

MAX_HELD_APPENDS = 64
"""Appends a follower keeps while an earlier one is missing."""

SURVEY_ID_BITS = 62
"""Size of a term survey's random id (fits every wire format's integers)."""


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class NotLeader(Exception):
    """Raised by propose/read_index on a node that is not the leader."""

    def __init__(self, leader_hint: int) -> None:
        super().__init__(f"not the leader (leader hint: {leader_hint or 'unknown'})")
        self.leader_hint = leader_hint


@dataclass(frozen=True, slots=True)
class Config:
    """Static settings of one node. Times are in ticks.

    ``wiped_vote_guard``: a node that lost its storage learns the terms of a
    majority of the others before it may vote again (see
    :mod:`mydns_lab.core.recovery`). Off only to show what it prevents.
    """

    id: int
    peers: tuple[int, ...]
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    max_inflight: int = 256
    max_msg_bytes: int = 1 << 20
    wiped_vote_guard: bool = True

    def __post_init__(self) -> None:
        if self.id not in self.peers or NO_NODE in self.peers:
            raise ValueError(f"node id {self.id} must be one of peers {self.peers} (ids > 0)")
        if len(set(self.peers)) != len(self.peers):
            raise ValueError(f"peers repeat an id: {self.peers}")
        if not 0 < self.heartbeat_ticks < self.election_ticks:
            raise ValueError("need 0 < heartbeat_ticks < election_ticks")


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile facts the host may want to show or act on."""

    role: Role
    leader: int
    term: int
    recovering: bool = False


@dataclass(frozen=True, slots=True)
class ReadState:
    """A ReadIndex request is safe to serve once ``applied >= index``."""

    ctx: int
    index: int


@dataclass(slots=True)
class Ready:
    """One batch of work for the host; see the module docstring."""

    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None
    install_snapshot: bool = False
    messages: list[RaftMessage] = field(default_factory=list)
    committed_entries: list[Entry] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)


Trace = Callable[[str], None]


def _no_trace(_line: str) -> None:
    pass


class RaftNode:
    def __init__(self, config: Config, state: PersistedState, rng: random.Random,
                 trace: Trace = _no_trace, recovering: bool = False) -> None:
        """Build a node from its durable state alone (empty for a new node).

        ``rng`` drives the election timeouts and nothing else touches
        randomness. ``trace`` receives one greppable line per role change.

        ``recovering``: this node lost its storage while the cluster went on
        (a wiped data folder). It may have voted and acknowledged entries it
        no longer has, so until it holds everything committed before, it
        neither votes nor campaigns, and leaders do not count its
        acknowledgements. It may have voted, or acknowledged entries, in a
        term above any it hears of at first, so (with
        ``config.wiped_vote_guard``) it first runs a term survey: it asks
        the others their terms until a majority has answered, and never
        votes in a term up to the highest reported. Then it is caught up
        once its commit index reaches an entry of its leader's term
        (everything committed earlier precedes that entry) and that entry is
        durable; the soft state then says ``recovering=False`` and the host
        must record that durably.
        """
        self.config = config
        self.id = config.id
        self._others = tuple(p for p in config.peers if p != config.id)
        self._rng = rng
        self._trace = trace
        self.log = RaftLog(state.snapshot.without_data(), state.entries,
                           state.hard_state.commit)
        self.term = state.hard_state.term
        self.vote = state.hard_state.vote
        self.role = Role.FOLLOWER
        self.leader = NO_NODE
        self._saved_hard_state = state.hard_state
        self._messages: list[RaftMessage] = []
        self._read_states: list[ReadState] = []
        self._install_pending = False
        self._now = 0
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._election_timeout = config.election_ticks
        self._votes: dict[int, bool] = {}
        self._progress: dict[int, Progress] = {}
        self._read_seq = 0
        self._reads_in_flight: list[tuple[int, int, int]] = []  # (seq, ctx, index)
        self._reads_waiting_commit: list[int] = []
        self._heartbeat_due = False
        self._urgent_heartbeats: list[int] = []
        self._ready_out = False
        self._held_appends: dict[int, AppendEntries] = {}  # prev_index -> append
        self.recovering = recovering
        self._caught_up = not recovering
        self._survey: TermSurvey | None = None
        self._survey_elapsed = 0
        if recovering and config.wiped_vote_guard:
            self._survey = TermSurvey(rng.getrandbits(SURVEY_ID_BITS), self._others)
            self._ask_terms()
        self._saved_soft_state = SoftState(Role.FOLLOWER, NO_NODE, self.term, recovering)
        self._become_follower(self.term, NO_NODE)

    # --- inputs ----------------------------------------------------------------

    def tick(self) -> None:
        """Advance time by one tick."""
        self._now += 1
        if self.role is Role.LEADER:
            self._tick_leader()
        else:
            self._election_elapsed += 1
            if self._election_elapsed >= self._election_timeout and not self.recovering:
                self._campaign(pre_vote=self.config.pre_vote)
            if self._survey is not None:
                self._survey_elapsed += 1
                if self._survey_elapsed >= self.config.election_ticks:
                    # Again, to whoever has not answered: queries and reports
                    # get lost. (An election timeout apart: nothing waits on
                    # a survey as a leader waits on a probe.)
                    self._ask_terms()

    def step(self, msg: RaftMessage) -> None:
        """Handle one message addressed to this node."""
        if msg.dst != self.id or msg.src not in self._others:
            return
        if msg.term > self.term:
            if not self._accept_higher_term(msg):
                return
        elif msg.term < self.term and not isinstance(msg, (TermQuery, TermReport)):
            # (A term survey is answered, and its reports count, whatever
            # the sender's term: the survey is about terms.)
            self._answer_stale(msg)
            return
        if isinstance(msg, RequestVote):
            self._handle_vote_request(msg)
        elif isinstance(msg, TermQuery):
            self._send(TermReport(self.term, self.id, msg.src, msg.survey))
        elif isinstance(msg, TermReport):
            self._record_term_report(msg)
        elif self.role is Role.LEADER:
            self._step_leader(msg)
        elif self.role is Role.FOLLOWER:
            self._step_follower(msg)
        else:
            self._step_candidate(msg)

    def propose(self, data: bytes) -> tuple[int, int]:
        """Append a command; returns its (index, term). Raises NotLeader.

        The command is committed once an entry with that index *and* term
        is applied; a different term at that index means it was lost.
        """
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader)
        entry = Entry(self.term, self.log.last_index + 1, data)
        self.log.append([entry])
        return entry.index, entry.term

    def read_index(self, ctx: int) -> None:
        """Start a linearizable read. Raises NotLeader.

        A :class:`ReadState` with ``ctx`` appears in a later Ready once a
        majority has confirmed this node still leads; the read may then be
        served when the application has applied its ``index``. If leadership
        is lost first, it never appears: hosts fail pending reads when the
        soft state says the node is no longer leader.
        """
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader)
        if self.log.term_at(self.log.committed) != self.term:
            # Our commit index may lag the real one until an entry of our
            # own term commits (§8); wait for the no-op to commit.
            self._reads_waiting_commit.append(ctx)
        else:
            self._start_read_round(ctx)

    def compact(self, index: int, data: bytes) -> None:
        """The application snapshotted its state as of applied ``index``."""
        if index <= self.log.snapshot.index:
            return
        term = self.log.term_at(index)
        assert term is not None and index <= self.log.applied, (index, self.log.applied)
        self.log.compact(Snapshot(index, term, data))

    # --- output ------------------------------------------------------------------

    def ready(self) -> Ready | None:
        """The next batch of work, or None when there is nothing to do."""
        assert not self._ready_out, "ready() called again before advance()"
        if self.role is Role.LEADER:
            self._flush_leader()
        rd = Ready()
        soft = self.soft_state
        if soft != self._saved_soft_state:
            rd.soft_state = soft
        hard = HardState(self.term, self.vote, self.log.committed)
        if hard != self._saved_hard_state:
            rd.hard_state = hard
        rd.entries = self.log.unstable_entries()
        if self.log.snapshot_unsaved:
            rd.snapshot = self.log.snapshot
            rd.install_snapshot = self._install_pending
        rd.messages, self._messages = self._messages, []
        rd.committed_entries = self.log.committed_unapplied()
        rd.read_states, self._read_states = self._read_states, []
        if (rd.soft_state is None and rd.hard_state is None and not rd.entries
                and rd.snapshot is None and not rd.messages and not rd.committed_entries
                and not rd.read_states):
            return None
        self._ready_out = True
        return rd

    def advance(self, rd: Ready) -> None:
        """The host has persisted, sent and applied everything in ``rd``."""
        assert self._ready_out, "advance() without ready()"
        self._ready_out = False
        if rd.soft_state is not None:
            self._saved_soft_state = rd.soft_state
        if rd.hard_state is not None:
            self._saved_hard_state = rd.hard_state
        if rd.snapshot is not None:
            self.log.snapshot_unsaved = False
            self._install_pending = False
            self.log.snapshot = self.log.snapshot.without_data()  # storage has the bytes now
        if rd.entries:
            self.log.stable_to(rd.entries[-1].index)
        if rd.committed_entries:
            self.log.applied_to(rd.committed_entries[-1].index)
        if self.role is Role.LEADER and rd.entries:
            self._maybe_commit()
        if self.recovering:
            self._maybe_end_recovery()

    # --- queries -------------------------------------------------------------------

    @property
    def soft_state(self) -> SoftState:
        return SoftState(self.role, self.leader, self.term, self.recovering)

    def progress(self, peer: int) -> Progress:
        """The leader's view of ``peer`` (for tests and the dashboard)."""
        return self._progress[peer]

    # --- role changes (the only place roles change) ---------------------------------

    def _become_follower(self, term: int, leader: int) -> None:
        if term > self.term:
            self.term = term
            self.vote = NO_NODE
        was = self.role
        self.role = Role.FOLLOWER
        self.leader = leader
        self._reset_timers()
        self._drop_leader_state()
        if was is not Role.FOLLOWER:
            self._trace(f"s{self.id} became follower term={self.term} leader={leader}")

    def _become_pre_candidate(self) -> None:
        self.role = Role.PRE_CANDIDATE
        self.leader = NO_NODE
        self._votes = {self.id: True}
        self._reset_timers()
        self._drop_leader_state()
        self._trace(f"s{self.id} became pre-candidate term={self.term}")

    def _become_candidate(self) -> None:
        self.term += 1
        self.vote = self.id
        self.role = Role.CANDIDATE
        self.leader = NO_NODE
        self._votes = {self.id: True}
        self._reset_timers()
        self._drop_leader_state()
        self._trace(f"s{self.id} became candidate term={self.term}")

    def _become_leader(self) -> None:
        self.role = Role.LEADER
        self.leader = self.id
        self._reset_timers()
        last = self.log.last_index
        self._progress = {p: Progress(next=last + 1, last_heard_tick=self._now)
                          for p in self._others}
        # A no-op of our own term lets earlier entries commit (§5.4.2) and
        # tells us the real commit index before we serve reads (§8).
        self.log.append([Entry(self.term, last + 1, b"")])
        self._trace(f"s{self.id} became leader term={self.term} commit={self.log.committed}")
        self._maybe_commit()

    def _reset_timers(self) -> None:
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        ticks = self.config.election_ticks
        self._election_timeout = ticks + self._rng.randrange(ticks)

    def _drop_leader_state(self) -> None:
        self._held_appends = {}
        self._progress = {}
        self._reads_in_flight = []
        self._reads_waiting_commit = []
        self._heartbeat_due = False

    # --- elections ---------------------------------------------------------------------

    def _campaign(self, pre_vote: bool) -> None:
        if pre_vote:
            self._become_pre_candidate()
            term = self.term + 1
        else:
            self._become_candidate()
            term = self.term
        for peer in self._others:
            self._send(RequestVote(term, self.id, peer, self.log.last_index,
                                   self.log.last_term, pre_vote))
        self._tally()

    def _tally(self) -> None:
        result = vote_result(self._votes, self.config.peers)
        if result is VoteResult.WON:
            if self.role is Role.PRE_CANDIDATE:
                self._campaign(pre_vote=False)
            else:
                self._become_leader()
        elif result is VoteResult.LOST:
            self._become_follower(self.term, NO_NODE)

    def _in_lease(self) -> bool:
        """Whether we believe a leader is alive, so elections are not needed."""
        if not self.config.check_quorum:
            return False  # without check-quorum a leader's liveness is unknown
        if self.role is Role.LEADER:
            return True
        return self.leader != NO_NODE and self._election_elapsed < self.config.election_ticks

    def _accept_higher_term(self, msg: RaftMessage) -> bool:
        """Apply the term rule for a message from a newer term.

        Returns False when the message is to be dropped.
        """
        if isinstance(msg, RequestVote):
            if self._in_lease():
                # Leader stickiness: a node that lost touch must not depose
                # a leader the rest of us still hear from.
                return False
            if msg.pre_vote:
                return True  # a pre-vote never changes our term
        if isinstance(msg, RequestVoteResponse) and msg.pre_vote and msg.granted:
            return True  # granted pre-votes carry the term we would move to
        leader = msg.src if isinstance(msg, (AppendEntries, Heartbeat, InstallSnapshot)) else NO_NODE
        self._become_follower(msg.term, leader)
        return True

    def _answer_stale(self, msg: RaftMessage) -> None:
        """A message from an older term. Tell senders who would otherwise
        never learn our term: a stale leader (so it steps down and a new
        election can include us) and a pre-candidate."""
        if isinstance(msg, (AppendEntries, Heartbeat)):
            self._send(HeartbeatResponse(self.term, self.id, msg.src))
        elif isinstance(msg, RequestVote) and msg.pre_vote:
            self._send(RequestVoteResponse(self.term, self.id, msg.src, False, True))

    def _handle_vote_request(self, msg: RequestVote) -> None:
        can_vote = not self.recovering and (
            self.vote == msg.src
            or (self.vote == NO_NODE and self.leader == NO_NODE)
            or (msg.pre_vote and msg.term > self.term))
        if can_vote and self.log.is_up_to_date(msg.last_index, msg.last_term):
            self._send(RequestVoteResponse(msg.term, self.id, msg.src, True, msg.pre_vote))
            if not msg.pre_vote:
                self.vote = msg.src
                self._election_elapsed = 0
        else:
            self._send(RequestVoteResponse(self.term, self.id, msg.src, False, msg.pre_vote))

    # --- per-role message handling ---------------------------------------------------

    def _step_follower(self, msg: RaftMessage) -> None:
        match msg:
            case AppendEntries():
                self._heard_from_leader(msg.src)
                self._handle_append(msg)
            case Heartbeat():
                self._heard_from_leader(msg.src)
                self.log.commit_to(min(msg.commit, self.log.last_index))
                self._send(HeartbeatResponse(self.term, self.id, msg.src, msg.read_seq,
                                             self.recovering))
            case InstallSnapshot():
                self._heard_from_leader(msg.src)
                self._handle_snapshot(msg)

    def _step_candidate(self, msg: RaftMessage) -> None:
        match msg:
            case AppendEntries() | Heartbeat() | InstallSnapshot():
                # Someone won this term (§5.2).
                self._become_follower(self.term, msg.src)
                self._step_follower(msg)
            case RequestVoteResponse():
                if msg.pre_vote == (self.role is Role.PRE_CANDIDATE):
                    self._votes[msg.src] = msg.granted
                    self._tally()

    def _step_leader(self, msg: RaftMessage) -> None:
        if msg.term != self.term:
            return  # a granted pre-vote from our own earlier campaign
        progress = self._progress[msg.src]
        progress.last_heard_tick = self._now
        if isinstance(msg, (AppendEntriesResponse, HeartbeatResponse)):
            if (isinstance(msg, HeartbeatResponse) and msg.recovering and not progress.recovering
                    and progress.state is PeerState.REPLICATE):
                # It lost its storage: what we know of its log is void. Probe
                # it, or an idle leader would never send it anything.
                progress.become_probe()
            progress.recovering = msg.recovering
        match msg:
            case AppendEntriesResponse():
                self._handle_append_response(msg, progress)
            case HeartbeatResponse():
                self._handle_heartbeat_response(msg, progress)

    def _heard_from_leader(self, leader: int) -> None:
        self._election_elapsed = 0
        self.leader = leader

    # --- follower side of replication ------------------------------------------------

    def _handle_append(self, msg: AppendEntries) -> None:
        if msg.prev_index < self.log.committed:
            # Everything up to our commit index already matches the leader's.
            self._send(AppendEntriesResponse(self.term, self.id, msg.src, True,
                                             match_index=self.log.committed,
                                             recovering=self.recovering))
            return
        if self.log.matches(msg.prev_index, msg.prev_term):
            self._append_held(self._append_matching(msg))
            return
        if msg.prev_index > self.log.last_index:
            if self._hold(msg):
                return  # answered once the gap before it fills
            hint_term, hint_index = 0, self.log.last_index + 1
        else:
            hint_term = self.log.term_at(msg.prev_index) or 0
            hint_index = self.log.first_index_of_term_at(msg.prev_index)
        self._send(AppendEntriesResponse(self.term, self.id, msg.src, False,
                                         rejected_index=msg.prev_index,
                                         conflict_term=hint_term, conflict_index=hint_index,
                                         recovering=self.recovering))

    def _hold(self, msg: AppendEntries) -> bool:
        """Keep a streamed append that arrived ahead of a gap: pipelined
        appends are often merely reordered, and the missing one is on its
        way (if it was lost, the leader notices the silence and probes).
        A probe is answered at once instead: the leader waits for it."""
        if (msg.probe or not msg.entries or self.recovering
                or len(self._held_appends) >= MAX_HELD_APPENDS):
            return False  # (a recovering node's gap is no reordering: say so now)
        self._held_appends[msg.prev_index] = msg
        return True

    def _append_matching(self, msg: AppendEntries) -> int:
        """Append ``msg``, whose previous entry matches ours, commit what it
        vouches for and acknowledge it; return the last index it vouches for."""
        last = self.log.append_after(msg.prev_index, msg.entries)
        self.log.commit_to(min(msg.commit, last))
        self._send(AppendEntriesResponse(self.term, self.id, msg.src, True,
                                         match_index=last, recovering=self.recovering))
        return last

    def _append_held(self, last: int) -> None:
        """Apply held appends that now attach at ``last``, in order."""
        while self._held_appends:
            msg = self._held_appends.pop(last, None)
            for stale in [i for i in self._held_appends if i < last]:
                del self._held_appends[stale]
            if msg is None or not self.log.matches(msg.prev_index, msg.prev_term):
                return
            last = self._append_matching(msg)

    def _handle_snapshot(self, msg: InstallSnapshot) -> None:
        snap = msg.snapshot
        if snap.index <= self.log.committed:
            match = self.log.committed
        elif self.log.matches(snap.index, snap.term):
            # We hold that entry already: keep our log, just commit.
            self.log.commit_to(snap.index)
            match = snap.index
        else:
            self.log.restore(snap)
            self._install_pending = True
            match = snap.index
            self._trace(f"s{self.id} restored snapshot index={snap.index} term={snap.term}")
        self._send(AppendEntriesResponse(self.term, self.id, msg.src, True, match_index=match,
                                         recovering=self.recovering))

    def _maybe_end_recovery(self) -> None:
        """Recovery ends once the term survey (if any) is complete and then
        the log has caught up; called after each Ready and survey report.

        In that order: before the wipe we may have acknowledged entries of a
        term above the leader we first hear of, and a leader of an older
        term lacks what those terms committed. After the survey our term is
        at least any term we acknowledged in (the argument of
        :mod:`mydns_lab.core.recovery`), so the leader we catch up from
        holds everything committed with our lost acknowledgements."""
        committed = self.log.committed
        if (not self._caught_up and self._survey is None and self.leader != NO_NODE
                and committed <= self.log.stable and self.log.term_at(committed) == self.term):
            self._caught_up = True
            self._trace(f"s{self.id} caught up after losing its storage term={self.term} "
                        f"commit={committed}")
        if self._caught_up and self._survey is None:
            self.recovering = False

    # --- the term survey of a node that lost its storage --------------------------------

    def _ask_terms(self) -> None:
        survey = self._survey
        assert survey is not None
        self._survey_elapsed = 0
        for peer in survey.unanswered():
            self._send(TermQuery(self.term, self.id, peer, survey.survey_id))

    def _record_term_report(self, msg: TermReport) -> None:
        """Count a report; when a majority of the others has answered, fold
        what they said into the hard state (see :mod:`mydns_lab.core.recovery`
        for why that, and not the survey, is what must be durable)."""
        survey = self._survey
        if survey is None or msg.survey != survey.survey_id:
            return  # a late answer to a finished or an earlier survey
        survey.record(msg.src, msg.term)
        if not survey.complete:
            return
        highest = survey.highest_term
        # Invariant: the term rule lifted our term to every report's.
        assert self.term >= highest, (self.term, highest)
        if self.term == highest and self.vote == NO_NODE:
            # We may have voted in this very term before the wipe: spend
            # the vote, durably, so that we cannot cast it a second time.
            self.vote = self.id
        self._survey = None
        self._trace(f"s{self.id} learned the terms of a majority: votes above term={highest}")
        self._maybe_end_recovery()

    # --- leader side of replication ----------------------------------------------------

    def _tick_leader(self) -> None:
        self._heartbeat_elapsed += 1
        if self._heartbeat_elapsed >= self.config.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            self._heartbeat_due = True
        elif self.config.check_quorum:
            self._urgent_heartbeats = self._peers_to_press()
        if self.config.check_quorum and not self._quorum_active():
            self._trace(f"s{self.id} stepped down: no quorum heard term={self.term}")
            self._become_follower(self.term, NO_NODE)

    def _peers_to_press(self) -> list[int]:
        """When fewer than a majority were heard within half an election
        timeout, the peers not heard from get a heartbeat every tick, so
        that a slow or lossy network gets many chances to answer before
        check-quorum deposes us. A healthy cluster never pays for this."""
        half = self.config.election_ticks // 2
        quiet = [p for p, pr in self._progress.items() if self._now - pr.last_heard_tick >= half]
        if len(self._progress) - len(quiet) + 1 >= majority(len(self.config.peers)):
            return []
        return quiet

    def _quorum_active(self) -> bool:
        """Whether a majority (us included) was heard from within one
        election timeout."""
        window = self.config.election_ticks
        heard = 1 + sum(1 for p in self._progress.values()
                        if self._now - p.last_heard_tick < window and not p.recovering)
        return heard >= majority(len(self.config.peers))

    def _handle_append_response(self, msg: AppendEntriesResponse, pr: Progress) -> None:
        if msg.success:
            if pr.update_match(msg.match_index, self._now):
                if pr.state is PeerState.PROBE:
                    pr.become_replicate()
                elif pr.state is PeerState.SNAPSHOT and pr.match >= pr.pending_snapshot:
                    pr.become_probe()
                    pr.become_replicate()
                self._maybe_commit()
            elif pr.state is PeerState.PROBE:
                pr.probe_sent = False
            return
        if pr.state is PeerState.SNAPSHOT:
            return
        if msg.recovering and msg.conflict_term == 0 and msg.conflict_index <= pr.match:
            # The follower lost its storage: what it acknowledged is gone.
            pr.match = msg.conflict_index - 1
            pr.become_probe()
            pr.next = msg.conflict_index
            return
        if pr.state is PeerState.REPLICATE and msg.rejected_index <= pr.match:
            return  # stale: we already know it matches further
        if pr.state is PeerState.PROBE and (msg.rejected_index != pr.next - 1
                                            or not pr.probe_sent):
            return  # stale, or a duplicate answer to a probe already handled
        previous_next = pr.next if pr.state is PeerState.PROBE else None
        pr.become_probe()
        pr.next = self._next_after_rejection(msg, pr)
        if pr.next == previous_next:
            # No step back was possible: probe again at the next heartbeat
            # response rather than at once, so lost or duplicated answers
            # cannot turn into a storm of probes.
            pr.probe_sent = True

    def _next_after_rejection(self, msg: AppendEntriesResponse, pr: Progress) -> int:
        """Fast back-up: skip the follower's whole conflicting term at once."""
        guess = msg.conflict_index
        if msg.conflict_term:
            ours = self.log.last_index_of_term(msg.conflict_term, msg.rejected_index)
            if ours is not None:
                guess = ours + 1
        # Never retry at or beyond the rejected point, never below the match.
        return max(pr.match + 1, min(guess, msg.rejected_index))

    def _handle_heartbeat_response(self, msg: HeartbeatResponse, pr: Progress) -> None:
        if msg.read_seq:
            pr.read_seq_acked = max(pr.read_seq_acked, msg.read_seq)
            self._release_reads()
        if pr.state is PeerState.PROBE:
            pr.probe_sent = False
        elif pr.state is PeerState.SNAPSHOT:
            if self._now - pr.snapshot_sent_tick >= self.config.election_ticks:
                pr.become_probe()  # the snapshot or its answer was lost
        elif (pr.inflight and
              self._now - pr.progress_tick >= self.config.heartbeat_ticks):
            # Appends in flight but no ack for a whole heartbeat interval:
            # assume they or their answers were lost, and find out again.
            pr.become_probe()

    def _maybe_commit(self) -> None:
        # A recovering follower's acknowledgements do not count: it may have
        # acknowledged, before losing its storage, entries it no longer has.
        matches = [0 if p.recovering else p.match for p in self._progress.values()]
        matches.append(self.log.stable)
        index = committed_index(matches)
        # Figure 8: only entries of our own term are committed by counting.
        if self.log.term_at(index) == self.term and self.log.commit_to(index):
            if self._reads_waiting_commit:
                waiting, self._reads_waiting_commit = self._reads_waiting_commit, []
                for ctx in waiting:
                    self._start_read_round(ctx)

    def _flush_leader(self) -> None:
        """Send what followers lack; called once per Ready, which batches
        every proposal made since the last one into one message each."""
        heartbeat = self._heartbeat_due
        urgent, self._urgent_heartbeats = self._urgent_heartbeats, []
        self._heartbeat_due = False
        for peer, pr in self._progress.items():
            if heartbeat or peer in urgent:
                self._send(Heartbeat(self.term, self.id, peer,
                                     min(pr.match, self.log.committed), self._read_seq))
            self._send_append(peer, pr)

    def _send_append(self, peer: int, pr: Progress) -> None:
        if pr.is_paused(self.config.max_inflight):
            return
        prev_term = self.log.term_at(pr.next - 1)
        if prev_term is None:
            snap = self.log.snapshot
            self._send(InstallSnapshot(self.term, self.id, peer, snap))
            pr.become_snapshot(snap.index, self._now)
            return
        entries = self.log.entries_between(pr.next, self.log.last_index,
                                           self.config.max_msg_bytes)
        if entries or pr.state is PeerState.PROBE:
            self._send(AppendEntries(self.term, self.id, peer, pr.next - 1, prev_term,
                                     tuple(entries), self.log.committed,
                                     pr.state is PeerState.PROBE))
            pr.sent_entries(entries[-1].index if entries else None, self._now)
        elif pr.commit_sent < self.log.committed:
            # Nothing new to send, but the commit index moved: tell the
            # follower at once, anchored where it is known to match so the
            # message can never be rejected.
            self._send(AppendEntries(self.term, self.id, peer, pr.match,
                                     self.log.term_at(pr.match) or 0, (), self.log.committed))
        pr.commit_sent = self.log.committed

    # --- ReadIndex ------------------------------------------------------------------

    def _start_read_round(self, ctx: int) -> None:
        if not self._others:
            self._read_states.append(ReadState(ctx, self.log.committed))
            return
        self._read_seq += 1
        self._reads_in_flight.append((self._read_seq, ctx, self.log.committed))
        self._heartbeat_due = True

    def _release_reads(self) -> None:
        acked = [0 if p.recovering else p.read_seq_acked for p in self._progress.values()]
        acked.append(self._read_seq)
        confirmed = committed_index(acked)
        while self._reads_in_flight and self._reads_in_flight[0][0] <= confirmed:
            _, ctx, index = self._reads_in_flight.pop(0)
            self._read_states.append(ReadState(ctx, index))

    # --- helpers ------------------------------------------------------------------------

    def _send(self, msg: RaftMessage) -> None:
        self._messages.append(msg)
