"""One test per rule of the Raft paper (§5) and of the extensions the core
implements (pre-vote, check-quorum, batching, ReadIndex, snapshots).

Each test builds one to three nodes on MemoryStorage, ticks them or steps a
few messages into them, and checks exactly what comes out of ``ready()``:
messages, hard state, entries, committed entries, soft state. Section
numbers refer to Ongaro & Ousterhout, "In Search of an Understandable
Consensus Algorithm (Extended Version)", and to Ongaro's thesis (§9.6
pre-vote and leader stickiness, §6.2 check-quorum, §6.4 ReadIndex, §5
snapshots) for the extensions. No simulator, no sleeps; every rng is
``random.Random(n)``.
"""

from __future__ import annotations

import pytest

from mydns_lab.core.messages import (AppendEntries, AppendEntriesResponse, Entry, HardState,
                                     Heartbeat, HeartbeatResponse, InstallSnapshot, RequestVote,
                                     RequestVoteResponse, Snapshot)
from mydns_lab.core.progress import PeerState
from mydns_lab.host import handle_ready
from mydns_lab.raft import NotLeader, ReadState, Ready, Role, SoftState
from tests.rafttest import (Cluster, Member, elect, entries, isolate, new_cluster, new_member,
                            restart, storage_with, tick_until_campaign)

E = 10  # election_ticks, the Config default


def only(msgs: list, kind: type) -> list:
    return [m for m in msgs if isinstance(m, kind)]


def member_in_role(role: Role) -> Member:
    """Node 1 of (1, 2, 3), durable term 2, brought into ``role``."""
    pre_vote = role is not Role.CANDIDATE
    m = new_member(storage=storage_with(term=2), pre_vote=pre_vote)
    if role is Role.LEADER:
        elect(m)
    elif role is not Role.FOLLOWER:
        tick_until_campaign(m)
    m.drain()
    assert m.node.role is role
    return m


# --- §5.1 terms -------------------------------------------------------------------


@pytest.mark.parametrize("role", list(Role))
def test_5_1_higher_term_makes_any_role_follower(role: Role) -> None:
    """§5.1: "If a server discovers that its term is out of date, it
    immediately reverts to follower state" and adopts the larger term
    (forgetting its vote), whatever its role."""
    m = member_in_role(role)
    m.step(Heartbeat(term=7, src=2, dst=1, commit=0))
    assert m.handle() == Ready(soft_state=SoftState(Role.FOLLOWER, 2, 7),
                               hard_state=HardState(term=7, vote=0, commit=0),
                               messages=[HeartbeatResponse(term=7, src=1, dst=2)])


def test_5_1_stale_leader_append_is_answered_with_newer_term_and_leader_steps_down() -> None:
    """§5.1: a request with a stale term is rejected; the answer carries the
    receiver's newer term, so the stale leader reverts to follower."""
    old = new_member(1, storage=storage_with(term=2))
    appends = elect(old)
    assert old.node.term == 3
    newer = new_member(2, storage=storage_with([1], term=5))
    newer.step(*only(appends, AppendEntries)[:1])  # the one addressed to node 2
    assert newer.handle() == Ready(messages=[HeartbeatResponse(term=5, src=2, dst=1)])
    assert newer.node.log.last_index == 1, "a stale append must not touch the log"
    old.step(*newer.sent)
    assert old.handle() == Ready(soft_state=SoftState(Role.FOLLOWER, 0, 5),
                                 hard_state=HardState(term=5, vote=0, commit=0))


def test_5_1_stale_vote_request_is_ignored() -> None:
    """§5.1: "If a server receives a request with a stale term number, it
    rejects the request": no vote, no state change."""
    m = new_member(storage=storage_with(term=5))
    m.step(RequestVote(term=3, src=2, dst=1, last_index=10, last_term=3))
    assert m.handle() is None
    assert (m.node.term, m.node.vote) == (5, 0)


def test_5_1_stale_pre_vote_request_is_answered_with_newer_term() -> None:
    """§5.1 with pre-vote (thesis §9.6): a pre-candidate with an old term is
    told our term, so it catches up instead of campaigning forever."""
    m = new_member(storage=storage_with(term=5))
    m.step(RequestVote(term=3, src=2, dst=1, last_index=10, last_term=3, pre_vote=True))
    assert m.handle() == Ready(messages=[RequestVoteResponse(term=5, src=1, dst=2, granted=False,
                                                             pre_vote=True)])


def test_5_1_term_and_vote_are_durable_before_the_vote_response_is_sent() -> None:
    """§5.1/Figure 2 "Persistent state ... updated on stable storage before
    responding to RPCs": the new term and vote are in the same Ready as the
    granted vote, and handle_ready saves them before sending it."""
    m = new_member()
    m.step(RequestVote(term=2, src=2, dst=1, last_index=0, last_term=0))
    durable_at_send: list = []
    rd = handle_ready(m.node, m.storage,
                      lambda msg: durable_at_send.append((msg, m.storage.load().hard_state)),
                      lambda _rd: None)
    granted = RequestVoteResponse(term=2, src=1, dst=2, granted=True)
    assert rd == Ready(soft_state=SoftState(Role.FOLLOWER, 0, 2),
                       hard_state=HardState(term=2, vote=2, commit=0), messages=[granted])
    assert durable_at_send == [(granted, HardState(term=2, vote=2, commit=0))]


# --- §5.2 leader election ---------------------------------------------------------------


def test_5_2_election_timeout_is_randomized_in_one_to_two_election_ticks() -> None:
    """§5.2: election timeouts are chosen randomly from a fixed interval,
    here [election_ticks, 2*election_ticks); over many seeds every value of
    the interval occurs and none outside it."""
    seen = {}
    for seed in range(300):
        m = new_member(seed=seed, pre_vote=False)
        seen[seed] = tick_until_campaign(m)
        assert E <= seen[seed] < 2 * E, f"seed {seed}: campaigned after {seen[seed]} ticks"
    assert set(seen.values()) == set(range(E, 2 * E))
    again = new_member(seed=7, pre_vote=False)
    assert tick_until_campaign(again) == seen[7], "the same seed must give the same timeout"


def test_5_2_silent_follower_campaigns_pre_vote_first_term_unchanged_until_it_wins() -> None:
    """§5.2 + pre-vote (thesis §9.6): a follower that hears nothing for its
    election timeout asks for pre-votes for term+1 without moving to it; only
    a won pre-vote makes it a candidate of term+1 that votes for itself."""
    m = new_member(storage=storage_with([1, 1], term=1))
    tick_until_campaign(m)
    assert m.handle() == Ready(soft_state=SoftState(Role.PRE_CANDIDATE, 0, 1),
                               messages=[RequestVote(term=2, src=1, dst=p, last_index=2,
                                                     last_term=1, pre_vote=True) for p in (2, 3)])
    assert m.storage.load().hard_state == HardState(term=1, vote=0, commit=0)
    m.step(RequestVoteResponse(term=2, src=2, dst=1, granted=True, pre_vote=True))
    assert m.handle() == Ready(soft_state=SoftState(Role.CANDIDATE, 0, 2),
                               hard_state=HardState(term=2, vote=1, commit=0),
                               messages=[RequestVote(term=2, src=1, dst=p, last_index=2,
                                                     last_term=1) for p in (2, 3)])


def test_5_2_candidate_increments_term_votes_for_itself_and_persists_both() -> None:
    """§5.2: "a follower increments its current term ... votes for itself and
    issues RequestVote RPCs"; term and vote reach storage before the requests
    leave (same Ready)."""
    m = new_member(storage=storage_with([1], term=1), pre_vote=False)
    tick_until_campaign(m)
    assert m.handle() == Ready(soft_state=SoftState(Role.CANDIDATE, 0, 2),
                               hard_state=HardState(term=2, vote=1, commit=0),
                               messages=[RequestVote(term=2, src=1, dst=p, last_index=1,
                                                     last_term=1) for p in (2, 3)])
    assert m.storage.load().hard_state == HardState(term=2, vote=1, commit=0)


def test_5_2_one_vote_per_term_first_come_first_served() -> None:
    """§5.2: "each server will vote for at most one candidate in a given
    term, on a first-come-first-served basis". Asking again for the same
    candidate (a retransmission) gets the same answer."""
    m = new_member()
    m.step(RequestVote(term=1, src=2, dst=1, last_index=0, last_term=0))
    assert m.handle().messages == [RequestVoteResponse(term=1, src=1, dst=2, granted=True)]
    m.step(RequestVote(term=1, src=3, dst=1, last_index=0, last_term=0))
    assert m.handle() == Ready(messages=[RequestVoteResponse(term=1, src=1, dst=3, granted=False)])
    m.step(RequestVote(term=1, src=2, dst=1, last_index=0, last_term=0))
    assert m.handle() == Ready(messages=[RequestVoteResponse(term=1, src=1, dst=2, granted=True)])
    assert m.storage.load().hard_state == HardState(term=1, vote=2, commit=0)


def test_5_2_candidate_with_majority_becomes_leader_and_sends_noop_at_once() -> None:
    """§5.2: a candidate "wins an election if it receives votes from a
    majority"; it then sends AppendEntries to every other server at once, here
    carrying the no-op entry of its term (§8)."""
    m = new_member(storage=storage_with([1, 1], term=1), peers=(1, 2, 3, 4, 5), pre_vote=False)
    tick_until_campaign(m)
    m.drain()
    m.step(RequestVoteResponse(term=2, src=2, dst=1, granted=True))
    assert m.handle() is None, "2 of 5 votes is no majority"
    m.step(RequestVoteResponse(term=2, src=3, dst=1, granted=False))
    assert m.handle() is None
    m.step(RequestVoteResponse(term=2, src=4, dst=1, granted=True))
    noop = Entry(term=2, index=3)
    assert m.handle() == Ready(
        soft_state=SoftState(Role.LEADER, 1, 2), entries=[noop],
        messages=[AppendEntries(term=2, src=1, dst=p, prev_index=2, prev_term=1, entries=(noop,),
                                commit=0, probe=True) for p in (2, 3, 4, 5)])


@pytest.mark.parametrize("pre_vote", [False, True], ids=["candidate", "pre-candidate"])
def test_5_2_candidate_steps_down_on_append_from_leader_of_same_term(pre_vote: bool) -> None:
    """§5.2: "If the leader's term ... is at least as large as the
    candidate's current term, then the candidate recognizes the leader as
    legitimate and returns to follower state" and handles the append."""
    m = new_member(storage=storage_with(term=1), pre_vote=pre_vote)
    tick_until_campaign(m)
    m.drain()
    term = m.node.term
    entry = Entry(term=term, index=1, data=b"x")
    m.step(AppendEntries(term=term, src=3, dst=1, prev_index=0, prev_term=0, entries=(entry,),
                         commit=0))
    assert m.handle() == Ready(soft_state=SoftState(Role.FOLLOWER, 3, term), entries=[entry],
                               messages=[AppendEntriesResponse(term=term, src=1, dst=3,
                                                               success=True, match_index=1)])


def test_5_2_split_vote_leads_to_new_election_after_a_timeout() -> None:
    """§5.2: when votes split and nobody wins, "each candidate will time out
    and start a new election by incrementing its term"."""
    m = new_member(pre_vote=False)
    tick_until_campaign(m)
    m.drain()
    # node 2 is a candidate of the same term
    m.step(RequestVote(term=1, src=2, dst=1, last_index=0, last_term=0))
    m.step(RequestVoteResponse(term=1, src=2, dst=1, granted=False),
           RequestVoteResponse(term=1, src=3, dst=1, granted=False))
    assert m.handle() == Ready(soft_state=SoftState(Role.FOLLOWER, 0, 1),
                               messages=[RequestVoteResponse(term=1, src=1, dst=2, granted=False)])
    ticks = tick_until_campaign(m)
    assert E <= ticks < 2 * E
    assert m.handle() == Ready(soft_state=SoftState(Role.CANDIDATE, 0, 2),
                               hard_state=HardState(term=2, vote=1, commit=0),
                               messages=[RequestVote(term=2, src=1, dst=p, last_index=0,
                                                     last_term=0) for p in (2, 3)])


def test_5_2_single_node_cluster_elects_itself_and_commits_alone() -> None:
    """§5.2 with one server: its own vote is a majority, so one election
    timeout makes it leader; its entries commit once durable (no messages)."""
    m = new_member(1, (1,))
    ticks = tick_until_campaign(m)
    assert E <= ticks < 2 * E and m.node.role is Role.LEADER
    noop = Entry(term=1, index=1)
    assert m.handle() == Ready(soft_state=SoftState(Role.LEADER, 1, 1),
                               hard_state=HardState(term=1, vote=1, commit=0), entries=[noop])
    assert m.handle() == Ready(hard_state=HardState(term=1, vote=1, commit=1),
                               committed_entries=[noop])
    assert m.node.propose(b"x") == (2, 1)
    m.drain()
    assert m.applied == [noop, Entry(term=1, index=2, data=b"x")] and m.sent == []


def test_5_2_leader_sends_heartbeats_every_heartbeat_ticks() -> None:
    """§5.2: "Leaders send periodic heartbeats (AppendEntries RPCs that carry
    no log entries) to all followers in order to maintain their authority"."""
    m = new_member(heartbeat_ticks=3)
    elect(m)
    for _ in range(2):
        m.tick()
        assert m.handle() is None
    m.tick()
    assert m.handle() == Ready(messages=[Heartbeat(term=1, src=1, dst=p, commit=0) for p in (2, 3)])


def test_5_2_follower_hearing_heartbeats_never_campaigns() -> None:
    """§5.2: "A server remains in follower state as long as it receives valid
    RPCs from a leader"; after the leader falls silent it campaigns within
    one randomized election timeout."""
    m = new_member(2)
    for _ in range(10):
        m.tick(E - 1)
        m.step(Heartbeat(term=1, src=1, dst=2, commit=0))
        m.drain()
    assert m.node.soft_state == SoftState(Role.FOLLOWER, 1, 1)
    assert E <= tick_until_campaign(m) < 2 * E


# --- pre-vote and leader stickiness (thesis §9.6) ------------------------------------------


def test_pre_vote_request_never_changes_the_receivers_term() -> None:
    """Thesis §9.6: a pre-vote asks "would you vote for me?"; granting or
    refusing it changes neither the receiver's term nor its vote."""
    m = new_member(storage=storage_with([1], term=1))
    m.step(RequestVote(term=5, src=2, dst=1, last_index=1, last_term=1, pre_vote=True))
    assert m.handle() == Ready(messages=[RequestVoteResponse(term=5, src=1, dst=2, granted=True,
                                                             pre_vote=True)])
    # node 3's log is behind
    m.step(RequestVote(term=5, src=3, dst=1, last_index=0, last_term=0, pre_vote=True))
    assert m.handle() == Ready(messages=[RequestVoteResponse(term=1, src=1, dst=3, granted=False,
                                                             pre_vote=True)])
    assert (m.node.term, m.node.vote) == (1, 0)
    assert m.storage.load().hard_state == HardState(term=1, vote=0, commit=0)


@pytest.mark.parametrize("pre_vote", [True, False], ids=["pre-vote", "vote"])
def test_leader_stickiness_follower_hearing_leader_ignores_vote_requests(pre_vote: bool) -> None:
    """Thesis §9.6 (with check-quorum): a follower that heard from a leader
    within election_ticks ignores (pre-)vote requests of any higher term;
    once that lease has run out, it answers them."""
    m = new_member(2, seed=1)
    m.step(Heartbeat(term=1, src=1, dst=2, commit=0))
    m.drain()
    request = RequestVote(term=2, src=3, dst=2, last_index=5, last_term=1, pre_vote=pre_vote)
    m.tick(E - 1)
    m.step(request)
    assert m.handle() is None, "a node in a leader's lease must ignore the request"
    assert m.node.term == 1
    m.tick()
    assert m.node.role is Role.FOLLOWER, "pick a seed whose timeout exceeds election_ticks"
    m.step(request)
    rd = m.handle()
    assert rd.messages == [RequestVoteResponse(term=2, src=2, dst=3, granted=True,
                                               pre_vote=pre_vote)]
    assert m.node.term == (1 if pre_vote else 2)


def test_pre_vote_rejoining_partitioned_node_does_not_depose_healthy_leader() -> None:
    """Thesis §9.6: a node cut off from the cluster cannot win pre-votes, so
    its term does not grow; when it comes back its requests are ignored by
    the leader and by followers that still hear the leader, and it rejoins
    as a follower of the same leader in the same term."""
    c = new_cluster(3, seed=3)
    leader = c.elect(1)
    term = leader.node.term
    cut = isolate(3)
    for _ in range(5 * E):
        for m in c.members.values():
            m.tick()
        c.stabilize(cut)
    assert c[3].node.role in (Role.FOLLOWER, Role.PRE_CANDIDATE)
    assert c[3].node.term == term, "a partitioned node's pre-votes must fail"
    assert leader.node.role is Role.LEADER
    for _ in range(2 * E):  # the partition heals; node 3 asks again
        c[3].tick()
        requests = only(c[3].drain(), RequestVote)
        if requests:
            break
    assert requests == [RequestVote(term=term + 1, src=3, dst=p, last_index=1, last_term=term,
                                    pre_vote=True) for p in (1, 2)]
    c.deliver(requests)
    assert c.stabilize() == [], "leader and follower must ignore the pre-votes"
    leader.tick()
    c.stabilize()
    assert leader.node.soft_state == SoftState(Role.LEADER, 1, term)
    assert c[2].node.soft_state == SoftState(Role.FOLLOWER, 1, term)
    assert c[3].node.soft_state == SoftState(Role.FOLLOWER, 1, term)


def test_pre_vote_node_with_stale_log_cannot_win() -> None:
    """Thesis §9.6: a pre-vote is granted only under the §5.4.1 log rule, so
    a node whose log is behind loses the pre-vote and never raises its term
    (nor anyone else's)."""
    voters = Cluster([new_member(i, storage=storage_with([1, 1], term=1)) for i in (1, 2)])
    behind = new_member(3, storage=storage_with([1], term=1))
    tick_until_campaign(behind)
    requests = behind.drain()
    assert requests == [RequestVote(term=2, src=3, dst=p, last_index=1, last_term=1, pre_vote=True)
                        for p in (1, 2)]
    voters.deliver(requests)
    answers = voters.stabilize()
    assert answers == []  # nothing among the voters
    replies = [m for v in voters.members.values() for m in v.sent]
    assert replies == [RequestVoteResponse(term=1, src=1, dst=3, granted=False, pre_vote=True),
                       RequestVoteResponse(term=1, src=2, dst=3, granted=False, pre_vote=True)]
    behind.step(*replies)
    assert behind.handle() == Ready(soft_state=SoftState(Role.FOLLOWER, 0, 1))
    assert [v.node.term for v in voters.members.values()] == [1, 1]
    assert behind.storage.load().hard_state == HardState(term=1, vote=0, commit=0)


# --- check-quorum (thesis §6.2) --------------------------------------------------------


def test_check_quorum_leader_steps_down_one_election_timeout_after_losing_majority() -> None:
    """Thesis §6.2: a leader steps down if an election timeout passes without
    a successful round of heartbeats to a majority. Counting ticks: it is
    still leader after election_ticks - 1 silent ticks and a follower after
    election_ticks, without changing its term."""
    m = new_member()
    elect(m)
    for _ in range(3 * E):  # a majority (node 2) answers every tick
        m.tick()
        m.drain()
        m.step(HeartbeatResponse(term=1, src=2, dst=1))
    assert m.node.role is Role.LEADER
    for tick in range(1, E):
        m.tick()
        m.drain()
        assert m.node.role is Role.LEADER, f"stepped down after {tick} silent ticks"
    m.tick()
    assert m.handle() == Ready(soft_state=SoftState(Role.FOLLOWER, 0, 1))


def test_check_quorum_off_leader_never_steps_down_alone() -> None:
    """Control for the test above: the step-down comes from check-quorum."""
    m = new_member(check_quorum=False)
    elect(m)
    for _ in range(5 * E):
        m.tick()
        m.drain()
    assert m.node.role is Role.LEADER


# --- §5.3 log replication ------------------------------------------------------------


def test_5_3_append_rejected_on_prev_mismatch_with_conflict_term_hint() -> None:
    """§5.3: "If the follower does not find an entry in its log with the same
    index and term, then it refuses the new entries"; the rejection carries
    the fast back-up hint: the conflicting term and its first index."""
    m = new_member(storage=storage_with([1, 1, 2, 2, 2], term=3))
    m.step(AppendEntries(term=3, src=2, dst=1, prev_index=4, prev_term=3,
                         entries=tuple(entries([3], 5)), commit=0))
    assert m.handle() == Ready(
        soft_state=SoftState(Role.FOLLOWER, 2, 3),
        messages=[AppendEntriesResponse(term=3, src=1, dst=2, success=False, rejected_index=4,
                                        conflict_term=2, conflict_index=3)])
    assert m.node.log.last_index == 5


def test_5_3_append_rejected_on_short_log_hints_last_index_plus_one() -> None:
    """§5.3 fast back-up: a follower lacking prev_index answers
    conflict_term=0 and conflict_index = its last index + 1."""
    m = new_member(storage=storage_with([1, 1], term=3))
    m.step(AppendEntries(term=3, src=2, dst=1, prev_index=5, prev_term=3, entries=(), commit=0))
    assert m.handle().messages == [AppendEntriesResponse(term=3, src=1, dst=2, success=False,
                                                         rejected_index=5, conflict_term=0,
                                                         conflict_index=3)]


def test_5_3_conflicting_entries_are_truncated_and_replaced() -> None:
    """§5.3: "If an existing entry conflicts with a new one (same index but
    different terms), delete the existing entry and all that follow it";
    storage loses them too."""
    m = new_member(storage=storage_with([1, 1, 2, 2], term=3))
    new = Entry(term=3, index=3, data=b"new")
    m.step(AppendEntries(term=3, src=2, dst=1, prev_index=2, prev_term=1, entries=(new,),
                         commit=0))
    assert m.handle() == Ready(soft_state=SoftState(Role.FOLLOWER, 2, 3), entries=[new],
                               messages=[AppendEntriesResponse(term=3, src=1, dst=2, success=True,
                                                               match_index=3)])
    assert m.node.log.last_index == 3
    assert m.storage.load().entries == entries([1, 1]) + [new]


def test_5_3_stale_duplicate_append_never_truncates_newer_entries() -> None:
    """§5.3 / Figure 2 step 3: only a *conflicting* entry truncates; an old,
    duplicated AppendEntries whose entries we already hold changes nothing
    (and acknowledges only what it carried)."""
    m = new_member(storage=storage_with([1, 1, 1, 1], term=1))
    m.step(AppendEntries(term=1, src=2, dst=1, prev_index=1, prev_term=1,
                         entries=tuple(entries([1], 2)), commit=0))
    assert m.handle() == Ready(soft_state=SoftState(Role.FOLLOWER, 2, 1),
                               messages=[AppendEntriesResponse(term=1, src=1, dst=2, success=True,
                                                               match_index=2)])
    assert m.node.log.last_index == 4
    assert m.storage.load().entries == entries([1, 1, 1, 1])


def test_5_3_follower_commit_is_min_of_leader_commit_and_last_new_entry() -> None:
    """Figure 2, AppendEntries step 5: "If leaderCommit > commitIndex, set
    commitIndex = min(leaderCommit, index of last new entry)": entries past
    the ones this message vouches for may still be wrong."""
    m = new_member(storage=storage_with([1, 1, 1, 1, 1], term=1))
    m.step(AppendEntries(term=1, src=2, dst=1, prev_index=2, prev_term=1,
                         entries=tuple(entries([1], 3)), commit=5))
    rd = m.handle()
    assert rd.hard_state == HardState(term=1, vote=0, commit=3)
    assert rd.committed_entries == entries([1, 1, 1])
    m.step(AppendEntries(term=1, src=2, dst=1, prev_index=3, prev_term=1, entries=(), commit=5))
    assert m.handle() == Ready(messages=[AppendEntriesResponse(term=1, src=1, dst=2, success=True,
                                                               match_index=3)])
    m.step(AppendEntries(term=1, src=2, dst=1, prev_index=5, prev_term=1, entries=(), commit=4))
    rd = m.handle()
    assert rd.hard_state == HardState(term=1, vote=0, commit=4)
    assert rd.committed_entries == entries([1], 4)


def test_5_3_heartbeat_never_commits_beyond_what_the_follower_holds() -> None:
    """§5.3: a follower may only commit entries it holds that match the
    leader's. The leader caps a heartbeat's commit at the follower's known
    match; the follower caps it again at its last index."""
    c = new_cluster(3)
    leader = c.elect(1, isolate(3))
    leader.node.propose(b"x")
    c.stabilize(isolate(3))
    assert leader.node.log.committed == 2
    leader.tick()
    assert leader.handle().messages == [Heartbeat(term=1, src=1, dst=2, commit=2),
                                        Heartbeat(term=1, src=1, dst=3, commit=0)]
    follower = new_member(storage=storage_with([1, 1], term=1))
    follower.step(Heartbeat(term=1, src=2, dst=1, commit=5))
    assert follower.handle() == Ready(soft_state=SoftState(Role.FOLLOWER, 2, 1),
                                      hard_state=HardState(term=1, vote=0, commit=2),
                                      messages=[HeartbeatResponse(term=1, src=1, dst=2)],
                                      committed_entries=entries([1, 1]))


@pytest.mark.parametrize("leader_terms, follower_terms, rejections", [
    ([1] * 3 + [3] * 50, [1] * 3 + [2] * 100, 1),        # follower's extra term unknown to leader
    ([1] * 3 + [3] * 50, [1] * 3, 1),                      # follower's log too short
    ([1, 1, 1, 2, 2] + [4] * 50, [1, 1, 1, 2, 2, 2, 2, 2] + [3] * 50, 2),  # Figure 7 (f)-like
], ids=["divergent-term", "short-log", "shared-term"])
def test_5_3_leader_backs_up_over_long_divergent_log_in_few_round_trips(
        leader_terms: list[int], follower_terms: list[int], rejections: int) -> None:
    """§5.3 optimization: with the conflict hint the leader skips a whole
    term per round trip instead of one entry, then the follower's log ends
    up identical to the leader's."""
    leader = new_member(1, storage=storage_with(leader_terms, term=4))
    follower = new_member(2, storage=storage_with(follower_terms, term=4))
    c = Cluster([leader, follower])
    c.deliver(elect(leader))
    delivered = c.stabilize()
    first_success = next(i for i, m in enumerate(delivered)
                         if isinstance(m, AppendEntriesResponse) and m.success)
    before = delivered[:first_success]
    assert len(only(before, AppendEntriesResponse)) == rejections
    assert len(only(before, AppendEntries)) == rejections  # the first one came from elect()
    assert follower.storage.load().entries == leader.storage.load().entries
    assert follower.node.log.last_index == len(leader_terms) + 1


def test_duplicated_rejection_of_a_probe_does_not_send_a_second_probe() -> None:
    """A network that duplicates answers must not multiply probes: the
    second copy of a rejection finds no probe outstanding and is dropped
    (seed 407 of the sweep once grew 270,000 appends in 1.7 s this way)."""
    leader = new_member(1, storage=storage_with([1, 1, 2, 2], term=3))
    follower = new_member(2, storage=storage_with([1], term=3))
    c = Cluster([leader, follower])
    c.deliver(elect(leader))
    [reject] = [m for m in follower.drain() if isinstance(m, AppendEntriesResponse)]
    assert not reject.success
    leader.step(reject)
    assert len(only(leader.drain(), AppendEntries)) == 1  # the next probe
    leader.step(reject)                                    # the duplicate
    assert only(leader.drain(), AppendEntries) == []


def test_leader_backs_up_below_match_for_a_follower_that_lost_its_storage() -> None:
    """A follower that lost its disk says so (recovering); its old match
    index is void, so the leader backs up to what it has now."""
    leader = new_member(1, storage=storage_with([1], term=1))
    follower = new_member(2, storage=storage_with([1], term=1))
    c = Cluster([leader, follower])
    c.deliver(elect(leader))
    c.stabilize()
    for n in range(5):
        leader.node.propose(b"x%d" % n)
    c.stabilize()
    assert leader.node.progress(2).match == 7
    wiped = restart(follower, seed=9, wiped=True)
    c = Cluster([leader, wiped])
    leader.node.propose(b"after")
    c.stabilize()
    assert wiped.node.log.last_index == leader.node.log.last_index
    assert wiped.storage.load().entries == leader.storage.load().entries


def test_5_3_leader_never_overwrites_or_deletes_its_own_entries() -> None:
    """§5.3 Leader Append-Only: an AppendEntries of its own term from someone
    else, or a follower's rejection, never changes the leader's log."""
    m = new_member(storage=storage_with([1, 1], term=1))
    elect(m)
    before = m.storage.load().entries
    m.step(AppendEntries(term=2, src=2, dst=1, prev_index=1, prev_term=1,
                         entries=(Entry(term=2, index=2, data=b"evil"),), commit=2))
    assert m.handle() is None
    m.step(AppendEntriesResponse(term=2, src=3, dst=1, success=False, rejected_index=2,
                                 conflict_term=9, conflict_index=1))
    rd = m.handle()
    assert rd.entries == [] and only(rd.messages, AppendEntries)[0].prev_index == 0
    assert m.node.role is Role.LEADER
    assert m.storage.load().entries == before == entries([1, 1]) + [Entry(term=2, index=3)]


# --- §5.4 safety ---------------------------------------------------------------------


@pytest.mark.parametrize("last_index, last_term, granted", [
    (10, 1, False),  # longer but older last term
    (2, 2, False),   # same last term, shorter
    (3, 2, True),    # identical
    (4, 2, True),    # same last term, longer
    (1, 3, True),    # newer last term, shorter
])
def test_5_4_1_vote_only_for_candidate_with_up_to_date_log(
        last_index: int, last_term: int, granted: bool) -> None:
    """§5.4.1: the voter denies its vote if its own log is more up-to-date:
    compare the last terms, then (same last term) the lengths. The higher
    term is adopted either way."""
    m = new_member(storage=storage_with([1, 1, 2], term=2))
    m.step(RequestVote(term=3, src=2, dst=1, last_index=last_index, last_term=last_term))
    rd = m.handle()
    assert rd.messages == [RequestVoteResponse(term=3, src=1, dst=2, granted=granted)]
    assert rd.hard_state == HardState(term=3, vote=2 if granted else 0, commit=0)


def test_5_4_2_figure_8_leader_commits_old_term_entry_only_with_one_of_its_own() -> None:
    """§5.4.2 / Figure 8: "Raft never commits log entries from previous terms
    by counting replicas". A leader of term 4 holding a term-2 entry that a
    majority (itself and node 2) has must not commit it; it commits both once
    its own term-4 entry is on a majority."""
    # One entry per message, so node 2 acknowledges index 2 before index 3.
    leader = new_member(1, storage=storage_with([1, 2], term=3, commit=1), max_msg_bytes=1)
    follower = new_member(2, storage=storage_with([1], term=3, commit=1))
    c = Cluster([leader, follower])
    c.deliver(elect(leader))
    assert leader.node.term == 4
    c.deliver(follower.drain())                        # rejects: log too short
    c.deliver(leader.drain())                          # sends entry 2 alone
    c.deliver(follower.drain())                        # acks index 2
    assert leader.node.progress(2).match == 2
    rd = leader.handle()
    assert rd.hard_state is None and rd.committed_entries == []
    assert leader.node.log.committed == 1, "a term-2 entry committed by counting replicas"
    assert rd.messages == [AppendEntries(term=4, src=1, dst=2, prev_index=2, prev_term=2,
                                         entries=(Entry(term=4, index=3),), commit=1)]
    c.deliver(rd.messages)
    c.deliver(follower.drain())                        # acks index 3
    rd = leader.handle()
    assert rd.hard_state == HardState(term=4, vote=1, commit=3)
    assert rd.committed_entries == [Entry(term=2, index=2, data=b"e2"), Entry(term=4, index=3)]


# --- persistence (Figure 2) -------------------------------------------------------------


def test_persisted_vote_survives_restart_and_blocks_second_vote_in_same_term() -> None:
    """Figure 2: currentTerm and votedFor are persistent. A node that voted
    for 2 in term 5 and restarts from storage alone refuses 3 in term 5
    (PySyncObj forgets the vote here and can elect two leaders)."""
    m = new_member()
    m.step(RequestVote(term=5, src=2, dst=1, last_index=0, last_term=0))
    assert m.handle().messages == [RequestVoteResponse(term=5, src=1, dst=2, granted=True)]
    m = restart(m, seed=9)
    assert (m.node.term, m.node.vote) == (5, 2)
    m.step(RequestVote(term=5, src=3, dst=1, last_index=0, last_term=0))
    assert m.handle() == Ready(messages=[RequestVoteResponse(term=5, src=1, dst=3, granted=False)])
    m.step(RequestVote(term=5, src=2, dst=1, last_index=0, last_term=0))
    assert m.handle() == Ready(messages=[RequestVoteResponse(term=5, src=1, dst=2, granted=True)])


def test_persisted_log_and_snapshot_survive_restart() -> None:
    """Figure 2: the log is persistent, and so is a snapshot (§7). A rebuilt
    node finds term, vote, snapshot, entries and commit index again and hands
    the committed entries after the snapshot to the application again."""
    m = new_member(1, (1,))
    elect(m)
    for data in (b"a", b"b", b"c"):
        m.node.propose(data)
    m.drain()
    m.node.compact(3, b"state@3")
    m.drain()
    m = restart(m, seed=4)
    log = m.node.log
    assert (m.node.term, m.node.vote, log.committed) == (1, 1, 4)
    # The node names the snapshot; its bytes stay in storage (raft.py's docstring).
    assert log.snapshot == Snapshot(index=3, term=1)
    assert m.storage.snapshot_data(3) == b"state@3"
    assert log.entries_between(4, 4) == [Entry(term=1, index=4, data=b"c")] and log.last_index == 4
    assert m.handle() == Ready(committed_entries=[Entry(term=1, index=4, data=b"c")])


# --- batching and pipelining -----------------------------------------------------------


def replicating_cluster(n: int = 3) -> tuple[Cluster, Member]:
    c = new_cluster(n)
    leader = c.elect(1)
    assert all(leader.node.progress(p).state is PeerState.REPLICATE for p in range(2, n + 1))
    return c, leader


def test_proposal_goes_out_in_the_very_next_ready() -> None:
    """Replication starts at once: the next Ready after a proposal carries
    the entry to every follower, without a tick or a heartbeat."""
    _, leader = replicating_cluster()
    index, term = leader.node.propose(b"x")
    entry = Entry(term=term, index=index, data=b"x")
    assert leader.handle() == Ready(entries=[entry], messages=[
        AppendEntries(term=1, src=1, dst=p, prev_index=1, prev_term=1, entries=(entry,), commit=1)
        for p in (2, 3)])


def test_batching_proposals_between_readies_go_in_one_append_per_follower() -> None:
    """Batching (thesis §10.2.1): every proposal made between two ready()
    calls travels in one AppendEntries per follower."""
    _, leader = replicating_cluster()
    for data in (b"a", b"b", b"c"):
        leader.node.propose(data)
    batch = (Entry(term=1, index=2, data=b"a"), Entry(term=1, index=3, data=b"b"),
             Entry(term=1, index=4, data=b"c"))
    assert leader.handle() == Ready(entries=list(batch), messages=[
        AppendEntries(term=1, src=1, dst=p, prev_index=1, prev_term=1, entries=batch, commit=1)
        for p in (2, 3)])


def test_pipelining_second_batch_is_sent_before_first_is_acknowledged() -> None:
    """Pipelining (thesis §10.2.2): a follower in replicate state gets the
    next batch right after the previous one, before acknowledging it."""
    _, leader = replicating_cluster()
    leader.node.propose(b"a")
    leader.drain()
    leader.node.propose(b"b")
    second = (Entry(term=1, index=3, data=b"b"),)
    assert leader.handle().messages == [AppendEntries(term=1, src=1, dst=p, prev_index=2,
                                                      prev_term=1, entries=second, commit=1)
                                        for p in (2, 3)]
    assert list(leader.node.progress(2).inflight) == [2, 3]


# --- ReadIndex (thesis §6.4) ------------------------------------------------------------------


def test_read_index_on_new_leader_waits_until_an_entry_of_its_term_commits() -> None:
    """Thesis §6.4 step 1: a new leader does not know the commit index until
    an entry of its own term commits; a read waits for its no-op."""
    m = new_member()
    elect(m)
    m.node.read_index(7)
    assert m.handle() is None, "no read round before the no-op commits"
    m.step(AppendEntriesResponse(term=1, src=2, dst=1, success=True, match_index=1))
    rd = m.handle()
    assert rd.hard_state == HardState(term=1, vote=1, commit=1) and rd.read_states == []
    assert rd.messages == [Heartbeat(term=1, src=1, dst=2, commit=1, read_seq=1),
                           AppendEntries(term=1, src=1, dst=2, prev_index=1, prev_term=1,
                                         entries=(), commit=1),
                           Heartbeat(term=1, src=1, dst=3, commit=0, read_seq=1)]
    m.step(HeartbeatResponse(term=1, src=3, dst=1, read_seq=1))
    noop = Entry(term=1, index=1)  # node 3 answered, so its probe is sent again
    assert m.handle() == Ready(read_states=[ReadState(7, 1)],
                               messages=[AppendEntries(term=1, src=1, dst=3, prev_index=0,
                                                       prev_term=0, entries=(noop,), commit=1,
                                                       probe=True)])


def test_read_index_needs_majority_heartbeat_acks_and_appends_nothing() -> None:
    """Thesis §6.4 steps 2-3: the leader records its commit index, then a
    heartbeat round must be acknowledged by a majority before the read is
    released; no entry is appended to the log."""
    c, leader = replicating_cluster(5)
    last = leader.node.log.last_index
    leader.node.read_index(9)
    assert leader.handle() == Ready(messages=[Heartbeat(term=1, src=1, dst=p, commit=1, read_seq=1)
                                              for p in (2, 3, 4, 5)])
    leader.step(HeartbeatResponse(term=1, src=2, dst=1, read_seq=1))
    assert leader.handle() is None, "leader and one follower are 2 of 5"
    leader.step(HeartbeatResponse(term=1, src=3, dst=1, read_seq=0))  # an older round: no
    assert leader.handle() is None
    leader.step(HeartbeatResponse(term=1, src=4, dst=1, read_seq=1))
    assert leader.handle() == Ready(read_states=[ReadState(9, 1)])
    assert leader.node.log.last_index == last and leader.storage.load().entries[-1].index == last


def test_read_index_on_single_node_leader_needs_no_round() -> None:
    """Thesis §6.4: with one server the leader alone is a majority; once its
    no-op has committed, a read is released in the next Ready, unsent."""
    m = new_member(1, (1,))
    elect(m)
    m.node.read_index(3)
    assert m.handle() == Ready(read_states=[ReadState(3, 1)])


def test_read_index_on_follower_raises_not_leader_with_hint() -> None:
    """Thesis §6.4: only the leader serves reads; others point at it."""
    c, _ = replicating_cluster()
    with pytest.raises(NotLeader) as raised:
        c[2].node.read_index(1)
    assert raised.value.leader_hint == 1
    with pytest.raises(NotLeader):
        c[3].node.propose(b"x")


@pytest.mark.parametrize("how", ["higher-term", "check-quorum"])
def test_read_index_never_released_by_a_leader_that_lost_leadership(how: str) -> None:
    """Thesis §6.4: the heartbeat round proves leadership; a node that lost
    it before the acks arrived must never release the read, even when the
    acks come later."""
    c, leader = replicating_cluster()
    leader.node.read_index(5)
    leader.drain()
    if how == "higher-term":
        leader.step(HeartbeatResponse(term=2, src=2, dst=1))
    else:
        for _ in range(E):
            leader.tick()
    assert leader.node.role is Role.FOLLOWER
    leader.step(HeartbeatResponse(term=1, src=2, dst=1, read_seq=1),
                HeartbeatResponse(term=1, src=3, dst=1, read_seq=1))
    leader.drain()
    assert all(rd.read_states == [] for rd in leader.readies)


# --- snapshots (§7) ------------------------------------------------------------------------


def test_7_compact_drops_entries_and_hands_snapshot_to_host_without_install() -> None:
    """§7: a server compacts its log by snapshotting applied state; the
    snapshot replaces the entries it covers, in memory and in storage. Its
    own snapshot is not installed again (install_snapshot is False)."""
    m = new_member(1, (1,))
    elect(m)
    for data in (b"a", b"b", b"c"):
        m.node.propose(data)
    m.drain()
    m.node.compact(3, b"state@3")
    snap = Snapshot(index=3, term=1, data=b"state@3")
    assert m.handle() == Ready(snapshot=snap, install_snapshot=False)
    assert m.node.log.first_index == 4 and m.node.log.term_at(2) is None
    assert m.storage.load().snapshot == snap
    assert m.storage.load().entries == [Entry(term=1, index=4, data=b"c")]
    m.node.compact(2, b"older")
    assert m.handle() is None, "compacting below the snapshot is a no-op"


def test_7_follower_behind_compaction_installs_snapshot_then_replication_continues() -> None:
    """§7: when the entries a follower needs were compacted away, the leader
    sends InstallSnapshot; the follower replaces its state (install_snapshot
    is True in its Ready) and later entries reach it by AppendEntries."""
    c = new_cluster(3, seed=5)
    cut = isolate(3)
    leader = c.elect(1, cut)
    for data in (b"a", b"b", b"c"):
        leader.node.propose(data)
    c.stabilize(cut)
    leader.node.compact(3, b"state@3")
    leader.node.propose(b"d")
    c.stabilize(cut)
    leader.tick()  # a heartbeat reaches node 3 once the partition heals
    delivered = c.stabilize()
    snap = Snapshot(index=3, term=1, data=b"state@3")
    assert only(delivered, InstallSnapshot) == [
        InstallSnapshot(term=1, src=1, dst=3, snapshot=snap)]
    install = [rd for rd in c[3].readies if rd.install_snapshot]
    assert install == [Ready(hard_state=HardState(term=1, vote=0, commit=3), snapshot=snap,
                             install_snapshot=True,
                             messages=[AppendEntriesResponse(term=1, src=3, dst=1, success=True,
                                                             match_index=3)])]
    assert c[3].installed == [snap]
    assert c[3].applied == [Entry(term=1, index=4, data=b"c"), Entry(term=1, index=5, data=b"d")]
    assert leader.node.progress(3).state is PeerState.REPLICATE
    leader.node.propose(b"e")
    delivered = c.stabilize()
    assert AppendEntries(term=1, src=1, dst=3, prev_index=5, prev_term=1,
                         entries=(Entry(term=1, index=6, data=b"e"),), commit=5) in delivered
    assert c[3].applied[-1] == Entry(term=1, index=6, data=b"e")
    assert c[3].storage.load().snapshot == snap
    assert c[3].storage.load().entries == leader.storage.load().entries
