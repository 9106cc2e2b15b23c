"""Deterministic simulator: N Raft nodes, clients and a hostile network in
one process, on a virtual clock.

One seed drives every choice: election timeouts, message loss, delay,
reordering and duplication, partitions (random halves, an isolated leader,
one-way links), crashes (some of them torn: the node dies in the middle of
a write, losing what storage had not yet reported durable) and restarts from
durable state alone, and the clients' operations. Safety invariants are
checked after every event (:mod:`mydns_lab.sim.invariants`). A final heal phase
demands progress: a leader within a bound, then every client operation
answered.

The nodes run the same core, the same :func:`~mydns_lab.host.handle_ready`
and the same record store as the real servers; only the clock, storage and
network are simulated.

    python -m mydns_lab.sim --seeds 1000            # sweep seeds 0..999
    python -m mydns_lab.sim --seed-start 17 --seeds 1 --trace   # replay one
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import random
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

from .. import codec
from ..clerks import Clerk, ClerkTiming, Finished
from ..core.messages import Entry, HardState, RaftMessage, Snapshot
from ..host import drain
from ..linearizability.models import KvModel, Operation
from ..linearizability.search import LINEARIZABLE, check
from ..net.faults import LinkFaults
from ..protocol import ClientReply, ClientRequest, Command, KvOp
from ..raft import Config, RaftNode, Ready, Role
from ..raftkv import KVServer, Result
from ..storage.base import MemoryStorage
from .invariants import InvariantViolation, SafetyChecker
from .network import SimNetwork

TICK_MS = 10
CLIENT_ID_BASE = 100
RELIABLE = LinkFaults(delay_ms_min=1, delay_ms_max=5)
LINEARIZABILITY_BUDGET_S = 60.0


@dataclass(frozen=True, slots=True)
class SimConfig:
    """The shape of one simulated run. Times in milliseconds of virtual time."""

    nodes: int = 5
    clients: int = 3
    keys: int = 4
    chaos_ms: int = 8_000
    heal_leader_ms: int = 5_000
    heal_ops_ms: int = 10_000
    election_ticks: int = 30
    heartbeat_ticks: int = 10
    max_raft_state: int | None = 3_000
    faults: bool = True
    pre_vote: bool = True
    check_quorum: bool = True
    max_msg_bytes: int = 1 << 20
    wiped_vote_guard: bool = True
    wiped_protection: bool = True
    """Off: a node restarted on wiped storage is an ordinary follower at
    once (no catch-up, no term survey), to show what the protection buys."""


class SimCrash(Exception):
    """Raised inside a torn write: the node dies with the write half done."""


class SimStorage(MemoryStorage):
    """Memory storage that can die half-way through a save.

    Durability follows a real disk: a save is a sequence of writes
    (snapshot, then each entry, then the hard state) and a crash keeps a
    prefix of them. Nothing was sent for that save, so losing the rest is
    allowed.
    """

    def __init__(self, rng: random.Random, recovering: bool = False) -> None:
        super().__init__(recovering)
        self._rng = rng
        self.tear_next_save = False

    def save(self, hard_state: HardState | None, entries: list[Entry] | Any,
             snapshot: Snapshot | None) -> None:
        if not self.tear_next_save:
            super().save(hard_state, entries, snapshot)
            return
        self.tear_next_save = False
        writes = (1 if snapshot is not None else 0) + len(entries) + (1 if hard_state else 0)
        kept = self._rng.randint(0, max(0, writes - 1))
        if snapshot is not None:
            if kept == 0:
                raise SimCrash()
            kept -= 1
        else:
            snapshot = None
        super().save(None, list(entries)[:kept], snapshot)
        raise SimCrash()


@dataclass(slots=True)
class HistoryRecord:
    """One client operation as the client saw it (times in virtual ms)."""

    client: int
    op: KvOp
    call_ms: int
    return_ms: int | None = None
    status: str = ""
    value: str = ""
    finished: Finished | None = None  # the clerk's whole answer, once returned


class SimServer:
    def __init__(self, node_id: int, storage: SimStorage) -> None:
        self.id = node_id
        self.storage = storage
        self.node: RaftNode | None = None
        self.kv: KVServer | None = None
        self.incarnation = 0

    @property
    def alive(self) -> bool:
        return self.node is not None


class SimClient:
    """A clerk plus the workload that feeds it and the history it records."""

    def __init__(self, client_id: int, servers: tuple[int, ...], rng: random.Random,
                 keys: int, send: Callable[[ClientRequest], None]) -> None:
        self.id = client_id
        self.rng = rng
        self.clerk = Clerk(client_id, servers, random.Random(rng.getrandbits(64)), send,
                           ClerkTiming(request_timeout_ms=300))
        self.keys = keys
        self.history: list[HistoryRecord] = []
        self.current: HistoryRecord | None = None
        self.count = 0

    def next_op(self) -> KvOp:
        key = f"k{self.rng.randrange(self.keys)}"
        roll = self.rng.random()
        self.count += 1
        if roll < 0.4:
            return KvOp("get", key)
        if roll < 0.7:
            return KvOp("put", key, f"{self.id}.{self.count}")
        return KvOp("append", key, f"{self.id}.{self.count};")


@dataclass(slots=True)
class SimResult:
    seed: int
    ok: bool
    violation: str = ""
    trace: list[str] = field(default_factory=list)
    applied: int = 0
    operations: int = 0
    digest: str = ""


class Simulation:
    """A cluster on a virtual clock. Tests drive it directly; the sweep
    uses :func:`run_seed`."""

    def __init__(self, seed: int, config: SimConfig = SimConfig(), trace: bool = True) -> None:
        self.seed = seed
        self.config = config
        self.rng = random.Random(seed)
        self.now_ms = 0
        self.net = SimNetwork(random.Random(self.rng.getrandbits(64)))
        self.checker = SafetyChecker()
        self.trace_lines: list[str] = []
        self._tracing = trace
        self._events: list[tuple[int, int, str, Any]] = []
        self._event_seq = 0
        self.peers = tuple(range(1, config.nodes + 1))
        self.servers = {i: SimServer(i, SimStorage(random.Random(self.rng.getrandbits(64))))
                        for i in self.peers}
        self.applied: dict[int, list[Entry]] = {i: [] for i in self.peers}
        self.clients: dict[int, SimClient] = {}
        self.workload_on = False
        self.leaders_seen: list[tuple[int, int, int]] = []  # (time, term, node)
        for i in self.peers:
            self.start_server(i)

    # --- time ---------------------------------------------------------------------------

    def run_for(self, duration_ms: int) -> None:
        self.run_until(lambda: False, duration_ms)

    def run_until(self, done: Callable[[], bool], limit_ms: int) -> bool:
        """Advance virtual time until ``done()`` holds or ``limit_ms`` pass.
        Returns whether ``done()`` held."""
        end = self.now_ms + limit_ms
        while not done():
            next_event = self._events[0][0] if self._events else None
            next_msg = self.net.next_time()
            candidates = [t for t in (next_event, next_msg) if t is not None]
            if not candidates or min(candidates) > end:
                self.now_ms = end
                return done()
            self.now_ms = min(candidates)
            if next_msg is not None and next_msg <= self.now_ms:
                for msg in self.net.pop_due(self.now_ms):
                    self._deliver(msg)
            while self._events and self._events[0][0] <= self.now_ms:
                _, _, kind, arg = heapq.heappop(self._events)
                self._handle_event(kind, arg)
        return True

    def schedule(self, delay_ms: int, kind: str, arg: Any = None) -> None:
        self._event_seq += 1
        heapq.heappush(self._events, (self.now_ms + delay_ms, self._event_seq, kind, arg))

    # --- servers ------------------------------------------------------------------------

    def start_server(self, node_id: int) -> None:
        """Boot (or reboot) a node from its durable state alone."""
        server = self.servers[node_id]
        assert server.node is None
        server.storage.tear_next_save = False
        state = server.storage.load()
        config = Config(node_id, self.peers, election_ticks=self.config.election_ticks,
                        heartbeat_ticks=self.config.heartbeat_ticks,
                        pre_vote=self.config.pre_vote, check_quorum=self.config.check_quorum,
                        max_msg_bytes=self.config.max_msg_bytes,
                        wiped_vote_guard=self.config.wiped_vote_guard)
        server.node = RaftNode(config, state, random.Random(self.rng.getrandbits(64)),
                               trace=self.trace,
                               recovering=server.storage.recovering and self.config.wiped_protection)
        server.kv = KVServer(server.node, state.snapshot, self._send,
                             self.config.max_raft_state, self._observer_for(node_id),
                             codec=codec)
        self.applied[node_id] = []
        server.incarnation += 1
        self.schedule(self.rng.randint(1, TICK_MS), "tick", (node_id, server.incarnation))

    def crash(self, node_id: int, torn: bool = False) -> None:
        """Kill a node. ``torn``: it dies inside its next write instead."""
        server = self.servers[node_id]
        if not server.alive:
            return
        if torn:
            server.storage.tear_next_save = True
            self.trace(f"s{node_id} will crash mid-write")
            self.schedule(200, "crash", (node_id, server.incarnation))
            return
        server.node = server.kv = None
        self.trace(f"s{node_id} crashed")

    def wipe(self, node_id: int) -> None:
        """Crash a node and give it empty storage, as if its data folder were
        deleted; it restarts recovering (see RaftNode)."""
        self.crash(node_id)
        server = self.servers[node_id]
        server.storage = SimStorage(random.Random(self.rng.getrandbits(64)), recovering=True)
        self.trace(f"s{node_id} storage wiped")

    def recovering(self) -> list[int]:
        return [i for i, s in self.servers.items() if s.storage.recovering]

    def restart(self, node_id: int) -> None:
        if not self.servers[node_id].alive:
            self.trace(f"s{node_id} restarted")
            self.start_server(node_id)

    def leader(self) -> int | None:
        """The live node that believes it leads in the highest term, if any."""
        best: tuple[int, int] | None = None
        for server in self.servers.values():
            if server.node is not None and server.node.role is Role.LEADER:
                if best is None or server.node.term > best[0]:
                    best = (server.node.term, server.id)
        return None if best is None else best[1]

    def node(self, node_id: int) -> RaftNode:
        node = self.servers[node_id].node
        assert node is not None, f"s{node_id} is down"
        return node

    def alive(self) -> list[int]:
        return [i for i, s in self.servers.items() if s.alive]

    # --- network ------------------------------------------------------------------------

    def partition(self, *groups: set[int]) -> None:
        """Cut every link between nodes of different groups (clients keep
        reaching every node)."""
        self.net.heal()
        for a, group_a in enumerate(groups):
            for group_b in groups[a + 1:]:
                self.net.cut_between(group_a, group_b)
        self.trace("partition " + " | ".join(",".join(f"s{i}" for i in sorted(g)) for g in groups))

    def heal_network(self) -> None:
        self.net.heal()
        self.net.faults = RELIABLE
        self.trace("network healed")

    def heal(self) -> None:
        """End every fault: heal the network, complete every pending crash
        and restart every server, so that nothing the chaos left scheduled
        can take a server down afterwards. (A torn crash is pending from
        "will crash mid-write" until its write or its timer; left pending,
        it struck after the heal and nothing restarted the server, which at
        three nodes could leave a single voter.)"""
        self.heal_network()
        for node_id, server in self.servers.items():
            if server.alive and server.storage.tear_next_save:
                self.crash(node_id)  # now, rather than inside a write after the heal
        for node_id in self.peers:
            self.restart(node_id)  # a new incarnation: its old crash timer is void

    def set_unreliable(self, on: bool, long_reordering: bool = False) -> None:
        """The classic lab's unreliable network: 10 % loss, 0-26 ms delays,
        and with ``long_reordering`` 2/3 of replies held 200-2,200 ms."""
        self.net.faults = LinkFaults.classic_unreliable(long_reordering) if on else RELIABLE
        self.trace(f"unreliable={on}")

    # --- clients ------------------------------------------------------------------------

    def add_client(self) -> SimClient:
        client_id = CLIENT_ID_BASE + len(self.clients) + 1
        client = SimClient(client_id, self.peers, random.Random(self.rng.getrandbits(64)),
                           self.config.keys, lambda req: self.net.send(req, self.now_ms))
        self.clients[client_id] = client
        return client

    def start_workload(self) -> None:
        """Every client runs operations back to back until stop_workload."""
        while len(self.clients) < self.config.clients:
            self.add_client()
        self.workload_on = True
        for client in self.clients.values():
            if client.current is None:
                self.schedule(client.rng.randint(0, 20), "client_next", client.id)

    def stop_workload(self) -> None:
        self.workload_on = False

    def submit(self, client: SimClient, op: KvOp) -> HistoryRecord:
        """Start one operation on an idle client."""
        record = HistoryRecord(client.id, op, self.now_ms)
        client.current = record
        client.history.append(record)
        client.clerk.start(op, self.now_ms)
        self._arm_client_timer(client)
        return record

    def clients_idle(self) -> bool:
        return all(c.current is None for c in self.clients.values())

    def history(self) -> list[HistoryRecord]:
        return [r for c in self.clients.values() for r in c.history]

    # --- tracing ------------------------------------------------------------------------

    def trace(self, line: str) -> None:
        if self._tracing:
            self.trace_lines.append(f"{self.now_ms:>8} {line}")

    def digest(self) -> str:
        """A fingerprint of every node's durable state and the histories."""
        h = hashlib.sha256()
        for i in self.peers:
            state = self.servers[i].storage.load()
            h.update(repr((state.hard_state, state.snapshot.index, state.entries)).encode())
        for record in self.history():
            h.update(repr(record).encode())
        return h.hexdigest()[:16]

    # --- internals -----------------------------------------------------------------------

    def _handle_event(self, kind: str, arg: Any) -> None:
        if kind == "tick":
            node_id, incarnation = arg
            server = self.servers[node_id]
            if server.node is None or server.incarnation != incarnation:
                return
            server.node.tick()
            assert server.kv is not None
            server.kv.tick()
            self._pump(node_id)
            self.schedule(TICK_MS, "tick", arg)
        elif kind == "crash":
            node_id, incarnation = arg
            if self.servers[node_id].incarnation == incarnation:
                self.crash(node_id)
        elif kind == "client_next":
            client = self.clients[arg]
            if self.workload_on and client.current is None:
                self.submit(client, client.next_op())
        elif kind == "client_timer":
            client_id, deadline = arg
            client = self.clients[client_id]
            if client.clerk.deadline_ms == deadline:
                client.clerk.on_timer(self.now_ms)
                self._arm_client_timer(client)
        elif kind == "call":
            arg()
        else:  # pragma: no cover - programming error
            raise ValueError(f"unknown event {kind}")

    def _deliver(self, msg: Any) -> None:
        if isinstance(msg, ClientReply):
            client = self.clients.get(msg.dst)
            if client is not None:
                self._client_reply(client, msg)
            return
        server = self.servers.get(msg.dst)
        if server is None or server.node is None:
            return
        if isinstance(msg, ClientRequest):
            assert server.kv is not None
            server.kv.submit(msg, self.now_ms)
        else:
            server.node.step(msg)
        self._pump(msg.dst)

    def _pump(self, node_id: int) -> None:
        """Handle every Ready the node has, compacting when it grows."""
        server = self.servers[node_id]
        node, kv = server.node, server.kv
        assert node is not None and kv is not None
        send = self._send
        apply = self._apply_for(node_id)
        try:
            drain(node, kv, server.storage, send, apply)
        except SimCrash:
            server.node = server.kv = None
            self.trace(f"s{node_id} crashed mid-write")

    def _send(self, msg: RaftMessage | ClientReply) -> None:
        self.net.send(msg, self.now_ms)

    def _apply_for(self, node_id: int) -> Callable[[Ready], None]:
        def apply(rd: Ready) -> None:
            server = self.servers[node_id]
            node, kv = server.node, server.kv
            assert node is not None and kv is not None
            if rd.entries:
                prev_term = node.log.term_at(rd.entries[0].index - 1)
                assert prev_term is not None
                self.checker.entries_persisted(node_id, rd.entries, prev_term)
            if rd.install_snapshot:
                self.applied[node_id] = []
            kv.apply(rd)
            if rd.soft_state is not None and rd.soft_state.role is Role.LEADER:
                self.leaders_seen.append((self.now_ms, rd.soft_state.term, node_id))
                self.checker.leader_elected(node_id, rd.soft_state.term, node.log)
        return apply

    def _observer_for(self, node_id: int) -> Callable[[Entry, Command | None, Result | None, bool], None]:
        def observe(entry: Entry, cmd: Command | None, result: Result | None,
                    effective: bool) -> None:
            self.checker.entry_applied(node_id, entry, cmd, effective)
            self.applied[node_id].append(entry)
        return observe

    def _client_reply(self, client: SimClient, reply: ClientReply) -> None:
        outcome = client.clerk.on_reply(reply, self.now_ms)
        if outcome is None:
            self._arm_client_timer(client)
            return
        self._finish(client, outcome)

    def _finish(self, client: SimClient, finished: Finished) -> None:
        record = client.current
        assert record is not None
        record.return_ms = self.now_ms
        record.status = finished.status
        record.value = finished.value
        record.finished = finished
        client.current = None
        if self.workload_on:
            self.schedule(client.rng.randint(0, 30), "client_next", client.id)

    def _arm_client_timer(self, client: SimClient) -> None:
        deadline = client.clerk.deadline_ms
        if deadline is not None:
            self.schedule(max(0, deadline - self.now_ms), "client_timer", (client.id, deadline))


# --- the randomized run -------------------------------------------------------------------


def _random_faults(rng: random.Random) -> LinkFaults:
    return LinkFaults(loss=rng.choice([0.0, 0.0, rng.uniform(0, 0.3)]),
                      duplicate=rng.choice([0.0, rng.uniform(0, 0.05)]),
                      delay_ms_min=1, delay_ms_max=rng.choice([3, 10, 30]),
                      long_delay=rng.choice([0.0, 0.0, rng.uniform(0, 0.05)]),
                      long_delay_ms_min=30, long_delay_ms_max=rng.choice([300, 2_000]))


def _nemesis(sim: Simulation, rng: random.Random) -> None:
    """One random fault. Scheduled repeatedly during the chaos phase."""
    peers = list(sim.peers)
    action = rng.choice(["halves", "isolate_leader", "one_way", "heal", "crash", "crash_leader",
                         "torn_crash", "restart", "restart", "faults", "wipe"])
    if action == "halves":
        rng.shuffle(peers)
        cut = rng.randint(1, len(peers) - 1)
        sim.partition(set(peers[:cut]), set(peers[cut:]))
    elif action == "isolate_leader":
        leader = sim.leader()
        if leader is not None:
            sim.partition({leader}, set(peers) - {leader})
    elif action == "one_way":
        links = [(a, b) for a in peers for b in peers if a != b]
        chosen = rng.sample(links, rng.randint(1, len(links) // 2))
        sim.net.cut.update(chosen)
        sim.trace("cut one-way " + " ".join(f"s{a}->s{b}" for a, b in chosen))
    elif action == "heal":
        sim.net.heal()
        sim.trace("partitions healed")
    elif action == "crash_leader":
        leader = sim.leader()
        if leader is not None:
            sim.crash(leader, torn=rng.random() < 0.5)
    elif action in ("crash", "torn_crash"):
        alive = sim.alive()
        if alive:
            sim.crash(rng.choice(alive), torn=action == "torn_crash")
    elif action == "wipe":
        # One lost disk at a time: with two, committed data can really be gone.
        if not sim.recovering():
            sim.wipe(rng.choice(peers))
    elif action == "restart":
        dead = [i for i in peers if not sim.servers[i].alive]
        if dead:
            sim.restart(rng.choice(dead))
    else:
        sim.net.faults = _random_faults(rng)
        f = sim.net.faults
        sim.trace(f"faults loss={f.loss:.2f} dup={f.duplicate:.2f} delay<={f.delay_ms_max}ms "
                  f"long={f.long_delay:.2f}")


def randomized_config(seed: int, config: SimConfig) -> SimConfig:
    """Vary the cluster's timing and batching by seed, so that the sweep
    also covers short timeouts (more contested elections) and small
    messages (batches split across appends)."""
    rng = random.Random(seed ^ 0x5EED)
    election_ticks = rng.choice([10, 30, 30])
    return dataclasses.replace(
        config, election_ticks=election_ticks,
        heartbeat_ticks=rng.choice([1, 3, election_ticks // 3]),
        max_msg_bytes=rng.choice([1, 200, 1 << 20]),
        max_raft_state=rng.choice([None, 600, 3_000]))


def run_seed(seed: int, config: SimConfig = SimConfig(), trace: bool = True) -> SimResult:
    """One randomized run: chaos, then heal and demand progress."""
    sim = Simulation(seed, randomized_config(seed, config), trace=trace)
    result = SimResult(seed, ok=True)
    try:
        _run_phases(sim)
        result.digest = sim.digest()
        sim.trace(f"done applied={sim.checker.applied_count} digest={result.digest}")
    except InvariantViolation as exc:
        result.ok, result.violation = False, str(exc)
    except Exception:  # a crash of the core is a failure like any other
        result.ok, result.violation = False, "exception: " + traceback.format_exc()
    result.trace = sim.trace_lines
    result.applied = sim.checker.applied_count
    result.operations = len(sim.history())
    return result


def _run_phases(sim: Simulation) -> None:
    config = sim.config
    nemesis_rng = random.Random(sim.rng.getrandbits(64))
    if config.faults:
        sim.net.faults = _random_faults(nemesis_rng)
    sim.start_workload()
    chaos_end = sim.now_ms + config.chaos_ms
    while sim.now_ms < chaos_end:
        sim.run_for(min(nemesis_rng.randint(200, 1_200), chaos_end - sim.now_ms))
        if config.faults and sim.now_ms < chaos_end:
            _nemesis(sim, nemesis_rng)
    sim.stop_workload()
    sim.heal()
    if not sim.run_until(lambda: sim.leader() is not None, config.heal_leader_ms):
        raise InvariantViolation(f"liveness: no leader {config.heal_leader_ms} ms after healing")
    if not sim.run_until(sim.clients_idle, config.heal_ops_ms):
        stuck = [f"client {c.id}: {c.current.op}" for c in sim.clients.values() if c.current]
        raise InvariantViolation(f"liveness: operations still pending {config.heal_ops_ms} ms "
                                 f"after healing: {'; '.join(stuck)}")
    check_linearizable(sim.history())


WIPED_VOTE_SCENARIO = "wiped-vote"
"""The name of :func:`wiped_vote_scenario` on the command line."""


def wiped_vote_config(wiped_vote_guard: bool = True) -> SimConfig:
    """The cluster :func:`wiped_vote_scenario` runs on: three nodes, a
    reliable network, no client, and neither pre-vote nor check-quorum, so
    that a leader cut off keeps leading its older term (with check-quorum
    the same interleaving needs timing windows, not a script)."""
    return SimConfig(nodes=3, faults=False, pre_vote=False, check_quorum=False,
                     wiped_vote_guard=wiped_vote_guard)


def wiped_vote_scenario(sim: Simulation) -> None:
    """The interleaving the wiped-vote guard exists for, step by step:

    1. ``old`` leads term T, its no-op committed on every node;
    2. ``old`` is cut off; ``winner`` campaigns in t = T + 1 and ``voter``
       votes for it, while ``old`` still leads T;
    3. ``voter`` loses its disk and comes back where only ``old`` reaches
       it, and catches up from ``old``, a leader of the older term T;
    4. ``voter`` stops hearing ``old`` and campaigns in t, a term it already
       voted in; ``old`` grants it.

    Without the guard ``voter`` wins t too, and the safety checker raises
    (two leaders of t). With it, ``voter`` cannot finish its term survey
    (``winner`` is out of reach), so it neither campaigns nor votes; after
    the heal it learns t and recovers, and there is a leader. Raises
    InvariantViolation on a broken invariant, or when a step does not
    unfold as scripted (``scenario: ...``)."""
    peers = set(sim.peers)
    expect(sim.run_until(lambda: sim.leader() is not None, 5_000), "no first leader")
    old = sim.leader()
    assert old is not None
    old_term = sim.node(old).term
    expect(sim.run_until(lambda: all(sim.node(i).log.committed == sim.node(old).log.last_index
                                     for i in peers), 2_000), "first no-op not committed")
    voter, winner = sorted(peers - {old})
    # Only ``winner`` stops hearing ``old``, so only it campaigns (no split
    # vote); ``voter`` still hears ``old``, but ``old`` hears none of them.
    sim.net.cut.update({(old, winner), (winner, old), (voter, old)})
    expect(sim.run_until(lambda: sim.node(winner).role is Role.LEADER, 5_000),
           f"s{winner} was not elected")
    sim.partition({old}, {voter, winner})
    term = sim.node(winner).term
    expect(term == old_term + 1 and sim.node(voter).vote == winner
           and sim.node(old).role is Role.LEADER,
           f"wanted s{voter} to vote for s{winner} in term {old_term + 1} while s{old} leads "
           f"term {old_term}; got term {term}")
    sim.trace(f"scenario: s{voter} voted for s{winner} in term {term}; s{old} leads {old_term}")
    sim.wipe(voter)
    sim.partition({winner}, {old, voter})
    sim.restart(voter)
    expect(sim.run_until(lambda: sim.node(voter).term == old_term
                         and sim.node(voter).log.committed == sim.node(old).log.committed, 2_000),
           f"s{voter} did not catch up from s{old}")
    sim.run_for(200)  # let the catch-up end recovery where the guard allows it
    sim.trace(f"scenario: s{voter} caught up from s{old} (term {old_term}); "
              f"recovering={sim.node(voter).recovering}")
    sim.net.cut.add((old, voter))  # s{voter} stops hearing its leader and times out
    if sim.run_until(lambda: sim.node(voter).role is Role.CANDIDATE, 2_000):
        sim.trace(f"scenario: s{voter} campaigns in term {sim.node(voter).term}")
    sim.net.cut.discard((old, voter))  # in time for s{old}'s answer
    sim.run_for(1_000)
    sim.heal()
    expect(sim.run_until(lambda: sim.leader() is not None and not sim.node(voter).recovering,
                         5_000), f"no leader, or s{voter} still recovering, after the heal")
    expect(sim.node(voter).term >= term, f"s{voter} recovered below term {term}")


def expect(condition: bool, what: str) -> None:
    """A scripted step must unfold as written; if not, the script (not Raft)
    is wrong, and says which step."""
    if not condition:
        raise InvariantViolation(f"scenario: {what}")


def run_scenario(seed: int, config: SimConfig, trace: bool = True) -> SimResult:
    """:func:`wiped_vote_scenario` on ``config`` as one seeded run."""
    sim = Simulation(seed, config, trace=trace)
    result = SimResult(seed, ok=True)
    try:
        wiped_vote_scenario(sim)
        result.digest = sim.digest()
    except InvariantViolation as exc:
        result.ok, result.violation = False, str(exc)
    result.trace = sim.trace_lines
    return result


def history_operations(records: list[HistoryRecord]) -> list[Operation]:
    """Client records as the checker's operations (virtual ms as time)."""
    ops = []
    for r in records:
        op = r.op
        if op.kind == "get":
            entry = ("get", op.key)
        elif op.kind in ("put", "append"):
            entry = (op.kind, op.key, op.value)
        else:  # pragma: no cover - the simulated workload issues only these
            raise ValueError(f"no model for {op.kind}")
        output = r.value if op.kind == "get" else None
        ops.append(Operation(r.client, r.call_ms, r.return_ms, entry, output))
    return ops


def check_linearizable(records: list[HistoryRecord]) -> None:
    """Raise InvariantViolation unless the clients' history is linearizable."""
    result = check(history_operations(records), KvModel(), LINEARIZABILITY_BUDGET_S)
    if result.verdict != LINEARIZABLE:
        raise InvariantViolation("linearizability: " + result.explain())


def replay_command(seed: int, nodes: int, *, scenario: str = "",
                   config: SimConfig | None = None) -> str:
    """The command line that replays one seed alone, with its trace, on
    ``config`` (the defaults when None; a scenario sets its own, but for
    the guard)."""
    config = config or SimConfig()
    shape = f"--scenario {scenario}" if scenario else f"--nodes {nodes}"
    switched_off = [("--no-wiped-vote-guard", config.wiped_vote_guard),
                    ("--no-wiped-protection", config.wiped_protection)]
    if not scenario:
        switched_off += [("--no-pre-vote", config.pre_vote),
                         ("--no-check-quorum", config.check_quorum)]
    flags = "".join(f" {flag}" for flag, on in switched_off if not on)
    return f"python -m mydns_lab.sim {shape} --seed-start {seed} --seeds 1 --trace{flags}"
