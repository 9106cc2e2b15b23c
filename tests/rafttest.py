"""Helpers for the Raft rule tests: a node on MemoryStorage, its Ready
batches handled by the one real :func:`~mydns_lab.host.handle_ready`, and a
few such nodes wired together by hand.

No simulator and no clock: a test ticks and steps nodes explicitly and
reads what came out. Every rng is ``random.Random(seed)``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from mydns_lab.core.messages import (Entry, HardState, RaftMessage, RequestVote,
                                     RequestVoteResponse, Snapshot)
from mydns_lab.host import handle_ready
from mydns_lab.raft import Config, RaftNode, Ready, Role, Trace
from mydns_lab.storage.base import MemoryStorage

PEERS3 = (1, 2, 3)


def entries(terms: Sequence[int], start: int = 1) -> list[Entry]:
    """Entries with the given terms at indexes ``start, start+1, ...``;
    the data names the index so that entries are told apart."""
    return [Entry(term, start + i, b"e%d" % (start + i)) for i, term in enumerate(terms)]


def storage_with(terms: Sequence[int] = (), term: int = 0, vote: int = 0, commit: int = 0,
                 snapshot: Snapshot | None = None) -> MemoryStorage:
    """A MemoryStorage holding a log whose entries have ``terms`` (after
    ``snapshot``, if given) and the hard state (term, vote, commit)."""
    storage = MemoryStorage()
    start = snapshot.index + 1 if snapshot else 1
    storage.save(HardState(term, vote, commit), entries(terms, start), snapshot)
    return storage


@dataclass
class Member:
    """One node, its storage, and everything its host has done so far."""

    node: RaftNode
    storage: MemoryStorage
    config: Config
    sent: list[RaftMessage] = field(default_factory=list)
    applied: list[Entry] = field(default_factory=list)
    installed: list[Snapshot] = field(default_factory=list)
    readies: list[Ready] = field(default_factory=list)

    @property
    def id(self) -> int:
        return self.config.id

    def tick(self, n: int = 1) -> None:
        for _ in range(n):
            self.node.tick()

    def step(self, *msgs: RaftMessage) -> None:
        for msg in msgs:
            self.node.step(msg)

    def handle(self) -> Ready | None:
        """Handle one Ready (persist -> send -> apply -> advance); return it."""
        return handle_ready(self.node, self.storage, self.sent.append, self._apply)

    def drain(self) -> list[RaftMessage]:
        """Handle Ready batches until there is none; return the messages sent."""
        before = len(self.sent)
        while self.handle() is not None:
            pass
        return self.sent[before:]

    def _apply(self, rd: Ready) -> None:
        self.readies.append(rd)
        if rd.install_snapshot:
            assert rd.snapshot is not None
            self.installed.append(rd.snapshot)
        self.applied.extend(rd.committed_entries)


def silent(_line: str) -> None:
    """The trace of a node whose role changes nobody reads."""


def new_member(node_id: int = 1, peers: tuple[int, ...] = PEERS3, *, seed: int = 0,
               storage: MemoryStorage | None = None, trace: Trace = silent,
               **options: object) -> Member:
    """A node built from ``storage`` alone (a fresh one by default);
    ``trace`` receives the core's role-change lines."""
    config = Config(node_id, peers, **options)  # type: ignore[arg-type]
    storage = storage or MemoryStorage()
    node = RaftNode(config, storage.load(), random.Random(seed), trace=trace)
    return Member(node, storage, config)


def restart(member: Member, seed: int = 0, *, wiped: bool = False,
            trace: Trace = silent) -> Member:
    """The same node after a crash: rebuilt from what its storage holds,
    or, ``wiped``, on empty storage and recovering (its disk was lost)."""
    storage = MemoryStorage(recovering=True) if wiped else member.storage
    node = RaftNode(member.config, storage.load(), random.Random(seed), trace=trace,
                    recovering=storage.recovering)
    return Member(node, storage, member.config)


def grant(request: RequestVote) -> RequestVoteResponse:
    """The answer of a voter that grants ``request``."""
    return RequestVoteResponse(request.term, request.dst, request.src, True, request.pre_vote)


def tick_until_campaign(member: Member) -> int:
    """Tick a follower until it starts an election; return the ticks taken."""
    for ticks in range(1, 2 * member.config.election_ticks + 1):
        member.tick()
        if member.node.role is not Role.FOLLOWER:
            return ticks
    raise AssertionError(f"s{member.id} did not campaign within 2*election_ticks")


def elect(member: Member) -> list[RaftMessage]:
    """Make ``member`` leader with no real peers: tick it until it campaigns,
    then grant every (pre-)vote it asks for. Returns what the new leader
    sent once elected (its first AppendEntries)."""
    tick_until_campaign(member)
    sent = member.drain()
    while member.node.role is not Role.LEADER:
        requests = [m for m in sent if isinstance(m, RequestVote)]
        assert requests, f"s{member.id} asks for no votes but is {member.node.role}"
        member.step(*(grant(r) for r in requests))
        sent = member.drain()
    return sent


Drop = Callable[[RaftMessage], bool]


def never(_msg: RaftMessage) -> bool:
    return False


def isolate(*ids: int) -> Drop:
    """A drop rule that cuts ``ids`` off from everybody else."""
    cut = set(ids)
    return lambda msg: (msg.src in cut) != (msg.dst in cut)


class Cluster:
    """A few members that exchange messages only when a test says so.
    Messages to a node that is not a member are lost."""

    def __init__(self, members: Iterable[Member]) -> None:
        self.members = {m.id: m for m in members}

    def __getitem__(self, node_id: int) -> Member:
        return self.members[node_id]

    def deliver(self, msgs: Iterable[RaftMessage], drop: Drop = never) -> list[RaftMessage]:
        """Step each message into its receiver unless dropped; return the delivered ones."""
        delivered = [m for m in msgs if m.dst in self.members and not drop(m)]
        for msg in delivered:
            self.members[msg.dst].step(msg)
        return delivered

    def stabilize(self, drop: Drop = never, max_rounds: int = 1000) -> list[RaftMessage]:
        """Drain every member and deliver what they send until nothing moves;
        return every message delivered, in order."""
        delivered: list[RaftMessage] = []
        for _ in range(max_rounds):
            sent = [m for member in self.members.values() for m in member.drain()]
            if not sent:
                return delivered
            delivered += self.deliver(sent, drop)
        raise AssertionError(f"no quiet point after {max_rounds} rounds")

    def elect(self, node_id: int, drop: Drop = never) -> Member:
        """Tick ``node_id`` alone until it campaigns, then run the election
        and the first replication round to completion."""
        leader = self.members[node_id]
        tick_until_campaign(leader)
        self.stabilize(drop)
        assert leader.node.role is Role.LEADER, leader.node.soft_state
        return leader


def new_cluster(n: int = 3, seed: int = 0, **options: object) -> Cluster:
    """``n`` fresh members with ids ``1..n``, each with its own seeded rng."""
    peers = tuple(range(1, n + 1))
    return Cluster(new_member(i, peers, seed=seed * 100 + i, **options) for i in peers)
