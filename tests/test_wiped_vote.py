"""A server that lost its disk must not vote twice in one term.

It may have voted in term t before the wipe. Before it votes again it
learns the terms of a majority of the others (its term survey) and votes
only above the highest (see mydns_lab/core/recovery.py). First the rule in
the core, one message at a time; then the simulator's scripted interleaving
(vote in t, wipe, catch up from a leader of an older term, campaign in t),
which breaks election safety with the guard off and not with it on; then
the heal phase, which must leave no fault pending (issue "Resilience").
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from mydns_lab.core.messages import (AppendEntries, Entry, Heartbeat, RaftMessage, RequestVote,
                                     RequestVoteResponse, TermQuery, TermReport)
from mydns_lab.core.recovery import TermSurvey
from mydns_lab.host import handle_ready
from mydns_lab.raft import Config, RaftNode, Ready, Role
from mydns_lab.sim.engine import (WIPED_VOTE_SCENARIO, SimConfig, Simulation, replay_command,
                                  run_scenario, run_seed, wiped_vote_config)
from mydns_lab.storage.base import MemoryStorage

PEERS = (1, 2, 3)


@dataclass
class Member:
    """One node with its storage and what it has sent, driven by hand."""

    node: RaftNode
    storage: MemoryStorage
    sent: list[RaftMessage] = field(default_factory=list)

    def handle(self) -> list[RaftMessage]:
        """Handle every waiting Ready the way every host does; return what
        was sent."""
        out: list[RaftMessage] = []

        def ignore(_rd: Ready) -> None:
            pass
        while handle_ready(self.node, self.storage, out.append, ignore) is not None:
            pass
        self.sent += out
        return out

    def step(self, msg: RaftMessage) -> list[RaftMessage]:
        self.node.step(msg)
        return self.handle()


def start(node_id: int, storage: MemoryStorage, *, guard: bool = True, seed: int = 0) -> Member:
    """A node built from ``storage`` alone, as after a (re)start. Without
    check-quorum, so that no leader lease hides a vote request."""
    config = Config(node_id, PEERS, election_ticks=10, heartbeat_ticks=2, check_quorum=False,
                    wiped_vote_guard=guard)
    node = RaftNode(config, storage.load(), random.Random(seed), recovering=storage.recovering)
    member = Member(node, storage)
    member.handle()
    return member


def wiped(node_id: int = 3, *, guard: bool = True, seed: int = 0) -> Member:
    return start(node_id, MemoryStorage(recovering=True), guard=guard, seed=seed)


def vote_request(term: int, src: int, dst: int = 3,
                 last: tuple[int, int] = (1, 1)) -> RequestVote:
    """A vote request from a candidate whose log ends at ``last`` (index, term)."""
    return RequestVote(term, src, dst, last_index=last[0], last_term=last[1])


def granted(out: list[RaftMessage]) -> bool:
    [answer] = [m for m in out if isinstance(m, RequestVoteResponse)]
    return answer.granted


def catch_up_from_leader_of_term_1(member: Member) -> None:
    """Leader s1 of term 1 hands ``member`` its whole log: one committed entry."""
    member.step(AppendEntries(1, 1, member.node.id, 0, 0, (Entry(1, 1),), commit=1, probe=True))


def catch_up_from_leader_of_term_2(member: Member) -> None:
    """Leader s2 of term 2 appends its no-op after our entry 1 and commits it."""
    member.step(AppendEntries(2, 2, member.node.id, 1, 1, (Entry(2, 2),), commit=2))


def survey_id(member: Member) -> int:
    return next(m.survey for m in reversed(member.sent) if isinstance(m, TermQuery))


# --- the rule in the core -----------------------------------------------------------


def test_a_wiped_node_asks_every_other_server_its_term_and_again_when_unanswered() -> None:
    member = wiped()
    queries = [m for m in member.sent if isinstance(m, TermQuery)]
    assert [(q.src, q.dst) for q in queries] == [(3, 1), (3, 2)]
    member.step(TermReport(0, 1, 3, queries[0].survey))
    for _ in range(member.node.config.election_ticks - 1):
        member.node.tick()
    assert not member.handle(), "no query again before an election timeout"
    member.node.tick()
    again = [m for m in member.handle() if isinstance(m, TermQuery)]
    assert [(q.dst, q.survey) for q in again] == [(2, queries[0].survey)]


def test_every_server_answers_a_term_query_whatever_the_askers_term() -> None:
    member = start(1, MemoryStorage())
    member.node.step(RequestVote(5, 2, 1, 0, 0))  # moves s1 to term 5
    member.handle()
    assert member.step(TermQuery(0, 3, 1, survey=77)) == [TermReport(5, 1, 3, survey=77)]


def test_caught_up_from_an_older_leader_it_still_does_not_vote_until_a_majority_reported() -> None:
    """The interleaving of the issue, one message at a time: s3 voted in
    term 2 before the wipe (which it forgot), a leader of term 1 catches it
    up, and a candidate of term 2 asks for its vote."""
    member = wiped()
    catch_up_from_leader_of_term_1(member)
    assert member.node.log.committed == 1 and member.node.recovering
    member.step(TermReport(1, 1, 3, survey_id(member)))
    assert member.node.recovering, "one report of two others is no majority"
    assert not granted(member.step(vote_request(2, src=1)))
    member.step(TermReport(2, 2, 3, survey_id(member)))  # s2 is at term 2: it voted there
    assert member.node.term == 2
    assert member.storage.load().hard_state.vote == 3, "its vote in term 2 is spent, durably"
    assert not granted(member.step(vote_request(2, src=1)))
    catch_up_from_leader_of_term_2(member)
    assert not member.node.recovering and not member.storage.recovering
    assert member.storage.load().hard_state.vote == 3


def test_without_the_guard_the_same_node_votes_twice_in_term_2() -> None:
    """What the guard prevents (and the proof that the test above can fail)."""
    member = wiped(guard=False)
    assert not [m for m in member.sent if isinstance(m, TermQuery)]
    catch_up_from_leader_of_term_1(member)
    assert not member.node.recovering
    assert granted(member.step(vote_request(2, src=1)))


def test_a_leader_older_than_the_survey_learned_does_not_end_recovery() -> None:
    """Before the wipe s3 may have acknowledged entries of term 2 that a
    leader of term 1 lacks: having that leader's log proves nothing once
    the survey says term 2 exists. A leader of term 2 must catch it up."""
    member = wiped()
    catch_up_from_leader_of_term_1(member)
    member.step(TermReport(2, 2, 3, survey_id(member)))
    member.step(TermReport(1, 1, 3, survey_id(member)))
    member.step(Heartbeat(1, 1, 3, commit=1))  # the leader of term 1, stale now
    assert member.node.recovering and member.node.term == 2
    catch_up_from_leader_of_term_2(member)
    assert not member.node.recovering


def test_what_it_learned_survives_a_crash_after_recovery() -> None:
    member = wiped()
    catch_up_from_leader_of_term_1(member)
    member.step(TermReport(2, 1, 3, survey_id(member)))
    member.step(TermReport(1, 2, 3, survey_id(member)))
    catch_up_from_leader_of_term_2(member)
    assert not member.node.recovering
    restarted = start(3, member.storage, seed=1)
    assert not restarted.node.recovering and restarted.node.leader == 0
    assert not granted(restarted.step(vote_request(2, src=1, last=(2, 2))))
    assert granted(restarted.step(vote_request(3, src=1, last=(2, 2))))


def test_a_crash_during_recovery_starts_a_new_survey_and_ignores_answers_to_the_old() -> None:
    member = wiped(seed=1)
    old_survey = survey_id(member)
    member.step(TermReport(4, 1, 3, old_survey))
    restarted = start(3, member.storage, seed=2)  # the marker is durable: still recovering
    assert restarted.node.recovering and survey_id(restarted) != old_survey
    catch_up_from_leader_of_term_1(restarted)
    restarted.step(TermReport(4, 1, 3, old_survey))
    restarted.step(TermReport(4, 2, 3, old_survey))
    assert restarted.node.recovering, "answers to an earlier survey count for nothing"
    assert not granted(restarted.step(vote_request(5, src=1)))


def test_a_wiped_node_neither_campaigns_before_its_survey_ends() -> None:
    member = wiped()
    catch_up_from_leader_of_term_1(member)
    for _ in range(5 * member.node.config.election_ticks):
        member.node.tick()
    member.handle()
    assert member.node.role is Role.FOLLOWER
    assert not [m for m in member.sent if isinstance(m, RequestVote)]


def test_an_idle_leader_catches_up_a_follower_that_lost_its_storage() -> None:
    """With no new proposals the leader would never send a wiped follower
    anything but heartbeats: its heartbeat answer saying "recovering" must
    make the leader probe it."""
    leader = start(1, MemoryStorage())
    members = {1: leader, 2: start(2, MemoryStorage()), 3: start(3, MemoryStorage())}
    for _ in range(3 * leader.node.config.election_ticks):
        leader.node.tick()
        if leader.node.role is not Role.FOLLOWER:
            break
    exchange(members)
    assert leader.node.role is Role.LEADER and members[3].node.log.committed == 1
    members[3] = wiped(3)
    for _ in range(4 * leader.node.config.heartbeat_ticks):
        leader.node.tick()
        exchange(members)
    assert members[3].node.log.committed == 1
    assert members[3].storage.load().entries == leader.storage.load().entries


def exchange(members: dict[int, Member]) -> None:
    """Deliver every message until nobody has anything to send."""
    pending = [m for member in members.values() for m in member.handle()]
    while pending:
        msg = pending.pop(0)
        pending += members[msg.dst].step(msg)


def test_a_survey_needs_a_majority_of_the_others() -> None:
    for size in range(1, 9):
        others = tuple(range(2, size + 1))
        survey = TermSurvey(1, others)
        for answered, other in enumerate(others, 1):
            survey.record(other, answered)
            # A majority of the others meets every majority of all that
            # holds this node: size - 1 < answered + size // 2.
            assert survey.complete == (answered + size // 2 > size - 1), (size, answered)
        assert survey.complete and survey.highest_term == len(others)
    assert TermSurvey(1, ()).complete


# --- the scripted interleaving on the simulator --------------------------------------

SCENARIO_SEEDS = [0, 1, 2]


def _scenario_report(seed: int, guard: bool, violation: str) -> str:
    replay = replay_command(seed, 3, scenario=WIPED_VOTE_SCENARIO,
                            config=wiped_vote_config(wiped_vote_guard=guard))
    return f"seed {seed}: {violation or 'no violation'}\n  replay: {replay}"


@pytest.mark.parametrize("seed", SCENARIO_SEEDS)
def test_scenario_breaks_election_safety_without_the_guard(seed: int) -> None:
    result = run_scenario(seed, wiped_vote_config(wiped_vote_guard=False))
    assert result.violation.startswith("election safety:"), \
        _scenario_report(seed, False, result.violation)
    assert any("campaigns in term 2" in line for line in result.trace)


@pytest.mark.parametrize("seed", SCENARIO_SEEDS)
def test_scenario_holds_election_safety_with_the_guard(seed: int) -> None:
    result = run_scenario(seed, wiped_vote_config(wiped_vote_guard=True))
    assert result.ok, _scenario_report(seed, True, result.violation)
    text = "\n".join(result.trace)
    assert "recovering=True" in text and "campaigns in term" not in text
    assert "learned the terms of a majority: votes above term=2" in text


def test_the_scenario_replays_from_its_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    from mydns_lab.sim.__main__ import main
    assert main(["--scenario", WIPED_VOTE_SCENARIO, "--seeds", "1", "--no-wiped-vote-guard"]) == 1
    out = capsys.readouterr().out
    assert "election safety" in out
    assert ("replay: python -m mydns_lab.sim --scenario wiped-vote --seed-start 0 --seeds 1 "
            "--trace --no-wiped-vote-guard") in out


# --- the heal phase leaves no fault pending ------------------------------------------

ISSUE_SEEDS_AT_3_NODES = [5550106, 5550147, 5550260, 5550290]
"""Where a torn crash scheduled just before the heal struck just after it."""


@pytest.mark.parametrize("seed", ISSUE_SEEDS_AT_3_NODES)
def test_issue_seeds_elect_a_leader_after_the_heal_at_3_nodes(seed: int) -> None:
    result = run_seed(seed, SimConfig(nodes=3), trace=False)
    assert result.ok, f"seed {seed}: {result.violation}\n  replay: {replay_command(seed, 3)}"


@pytest.mark.parametrize("seed", [0, 1])
def test_heal_completes_a_pending_torn_crash_and_restarts_everyone(seed: int) -> None:
    sim = Simulation(seed, SimConfig(nodes=3, faults=False))
    assert sim.run_until(lambda: sim.leader() is not None, 5_000), f"seed {seed}: no leader"
    sim.crash(2, torn=True)  # "will crash mid-write": pending until a write or its timer
    sim.crash(3)
    sim.heal()
    sim.run_for(2_000)
    assert sim.alive() == [1, 2, 3], f"seed {seed}: " + "\n".join(sim.trace_lines[-10:])
    assert not any(s.storage.tear_next_save for s in sim.servers.values())
