"""The MIT 6.824 Raft lab's tester, ported onto the deterministic simulator.

:class:`Lab` gives the lab's helpers (``one``, ``n_committed``, ``wait``,
``check_one_leader``, ``check_terms``, ``check_no_leader``, ``connect``,
``disconnect``, ``crash``, ``start1``) on top of :class:`Simulation`. Where
the lab sleeps, the lab here advances virtual time; where the lab spawns
goroutines that call ``one`` concurrently, :meth:`Lab.agree` drives several
commands at once.

Differences from the lab that the tests account for:

* Node ids are ``1..n``; :meth:`Lab.peer` is the lab's ``(i + k) % n``.
* A new leader appends a no-op of its own term, so commands sit one index
  later than in the lab after every election.
* Commands are record-store commands (the nodes apply every entry through
  the record store). Each lab value becomes the first request of its own
  client, so re-proposing a value takes effect once.

Every failure names the seed and the command that replays it.
"""

from __future__ import annotations

import random
from collections import Counter
from contextlib import contextmanager
from typing import Callable, Iterator, NoReturn

from mydns_lab import codec
from mydns_lab.codec import decode, encode
from mydns_lab.core.messages import AppendEntriesResponse
from mydns_lab.lab.state import RAFT_RPC_TYPES
from mydns_lab.protocol import Command, KvOp
from mydns_lab.raft import NotLeader, Role
from mydns_lab.raftkv import KVStateMachine
from mydns_lab.sim.engine import SimConfig, Simulation
from mydns_lab.sim.network import SimNetwork

RAFT_ELECTION_TIMEOUT_MS = 1_000
"""The lab's RaftElectionTimeout: what tests sleep to let an election happen."""

ONE_LIMIT_MS = 10_000      # one(): give up after this long
ONE_ATTEMPT_MS = 2_000     # one(): re-propose after this long
LAB_CLIENT_BASE = 1_000_000
"""Client ids of lab commands: far above the simulator's own clients."""

REJECTED = "AppendEntriesResponse.rejected"


class LabFailure(AssertionError):
    """A lab check failed; the message carries the seed and the replay."""


class Lab:
    """One lab test's cluster. Construct through the test's ``make_lab``
    fixture, which supplies ``replay`` (the command that reruns the test)."""

    def __init__(self, seed: int, nodes: int, replay: str, *, max_raft_state: int | None = None,
                 count_bytes: bool = False, **config: int | bool) -> None:
        self.seed = seed
        self.replay = replay
        self.n = nodes
        # The lab has no snapshots before 2D: max_raft_state None by default.
        self.sim = Simulation(seed, SimConfig(nodes=nodes, max_raft_state=max_raft_state,
                                              faults=False, **config))
        if count_bytes:
            # Nothing has been sent yet, so swapping the network loses nothing.
            self.sim.net = SimNetwork(random.Random(self.sim.rng.getrandbits(64)),
                                      size_of=lambda msg: len(codec.encode(msg)))
        self.rng = random.Random(seed ^ 0x6824)   # the scenario's own random choices
        self.connected = set(self.sim.peers)
        self._rejected = 0
        self._count_rejections()
        self._clients: dict[int | str, int] = {}
        self._starts = 0

    # --- failures ---------------------------------------------------------------------

    def why(self, what: str) -> str:
        """``what`` plus the seed, the replay command and the last events."""
        tail = "\n    ".join(self.sim.trace_lines[-12:])
        return (f"{what}\n  seed={self.seed} t={self.sim.now_ms}ms\n"
                f"  replay: {self.replay}\n  last events:\n    {tail}")

    def fail(self, what: str) -> NoReturn:
        raise LabFailure(self.why(what))

    @contextmanager
    def _noted(self) -> Iterator[None]:
        """Anything the simulator raises (an invariant violation, an assert
        in the core) leaves with the seed and replay command attached."""
        try:
            yield
        except LabFailure:
            raise
        except BaseException as exc:
            exc.add_note(self.why("while the simulator ran"))
            raise

    # --- time -------------------------------------------------------------------------

    def run_for(self, ms: int) -> None:
        with self._noted():
            self.sim.run_for(ms)

    def run_until(self, done: Callable[[], bool], limit_ms: int) -> bool:
        with self._noted():
            return self.sim.run_until(done, limit_ms)

    @property
    def now_ms(self) -> int:
        return self.sim.now_ms

    # --- the network and crashes (the lab's connect/disconnect/crash1/start1) --------------

    def peer(self, i: int, k: int) -> int:
        """The lab's ``(i + k) % servers`` with ids ``1..n``."""
        return (i - 1 + k) % self.n + 1

    def disconnect(self, *ids: int) -> None:
        self.connected.difference_update(ids)
        self._apply_links()

    def connect(self, *ids: int) -> None:
        self.connected.update(ids)
        self._apply_links()

    def connect_all(self) -> None:
        self.connect(*self.sim.peers)

    def crash(self, i: int) -> None:
        """The lab's crash1: cut the node off and kill it (it keeps only
        what its storage holds)."""
        self.disconnect(i)
        self.sim.crash(i)

    def start1(self, i: int) -> None:
        """The lab's start1: (re)boot from durable state, still disconnected."""
        self.crash(i)
        self.sim.restart(i)

    def alive(self, i: int) -> bool:
        return self.sim.servers[i].alive

    def up(self) -> list[int]:
        """Nodes that are running and connected."""
        return [i for i in self.sim.peers if i in self.connected and self.alive(i)]

    def _apply_links(self) -> None:
        apart = [{i} for i in self.sim.peers if i not in self.connected]
        self.sim.partition(set(self.connected), *apart)

    # --- leaders and terms ------------------------------------------------------------

    def leaders(self) -> list[int]:
        """Connected, running nodes that believe they lead."""
        return [i for i in self.up() if self.sim.node(i).role is Role.LEADER]

    def check_one_leader(self) -> int:
        """Up to ten times: wait about half a second, then look for leaders
        among connected nodes. Fails if a term has two; returns the leader
        of the newest term."""
        for _ in range(10):
            self.run_for(self.rng.randint(450, 550))
            by_term: dict[int, list[int]] = {}
            for i in self.leaders():
                by_term.setdefault(self.sim.node(i).term, []).append(i)
            for term, ids in by_term.items():
                if len(ids) > 1:
                    self.fail(f"term {term} has {len(ids)} leaders: {ids}")
            if by_term:
                return by_term[max(by_term)][0]
        self.fail("expected one leader, got none")

    def check_terms(self) -> int:
        """The term every connected node is in (they must agree); 0 if none up."""
        terms = {i: self.sim.node(i).term for i in self.up()}
        if len(set(terms.values())) > 1:
            self.fail(f"servers disagree on term: {terms}")
        return next(iter(terms.values()), 0)

    def check_no_leader(self) -> None:
        if self.leaders():
            self.fail(f"expected no leader among connected servers, but {self.leaders()} "
                      f"claim to lead")

    # --- commands ----------------------------------------------------------------------

    def command(self, value: int | str) -> bytes:
        """The log data of lab value ``value``: the first request of a client
        of its own, appending ``value`` to key ``x``."""
        client = self._clients.setdefault(value, LAB_CLIENT_BASE + len(self._clients))
        return encode(Command(client, 1, KvOp("append", "x", f"{value};")))

    def start(self, i: int, value: int | str, flush: bool = True) -> tuple[int, int] | None:
        """The lab's Start on node ``i``: (index, term), or None when it is
        down or not the leader. ``flush=False`` leaves the proposal in the
        node's next Ready (call :meth:`flush`), batching several."""
        if not self.alive(i):
            return None
        try:
            placed = self.sim.node(i).propose(self.command(value))
        except NotLeader:
            return None
        if flush:
            self.flush(i)
        return placed

    def flush(self, i: int) -> None:
        """Let node ``i`` handle its Ready batches now, as its host would
        right after a client request."""
        with self._noted():
            self.sim._pump(i)  # the one private call: Simulation has no public "pump"

    def n_committed(self, index: int) -> tuple[int, bytes | None]:
        """How many running nodes have applied ``index``, and its data.

        The safety checker has already verified that every node applied the
        same data there, so one copy stands for all.
        """
        count = sum(1 for i in self.sim.peers
                    if self.alive(i) and self.sim.node(i).log.applied >= index)
        return count, (self.sim.checker.applied_data(index) if count else None)

    def one(self, value: int | str, expected: int, retry: bool) -> int:
        """The lab's one(): get ``value`` committed on ``expected`` nodes and
        return its index. Re-proposes after 2 s if ``retry``; fails after 10 s."""
        return self.agree([value], expected, retry)[0]

    def agree(self, values: list[int | str], expected: int, retry: bool = True) -> list[int]:
        """Several concurrent one() calls: every value is proposed at once
        and each is re-proposed on its own after 2 s without agreement."""
        datas = [self.command(v) for v in values]
        done: dict[int, int] = {}                   # position -> index agreed
        trying: dict[int, tuple[int, int]] = {}     # position -> (index, since ms)
        deadline = self.now_ms + ONE_LIMIT_MS

        def settled(pos: int) -> str:
            index, since = trying[pos]
            count, data = self.n_committed(index)
            if count >= expected and data == datas[pos]:
                return "agreed"
            if count and data != datas[pos]:
                return "lost"      # another command took the index
            return "timeout" if self.now_ms - since >= ONE_ATTEMPT_MS else ""

        while len(done) < len(values):
            if self.now_ms >= deadline:
                self.fail(f"one({values}) failed to reach agreement on {expected} servers "
                          f"within {ONE_LIMIT_MS} ms; agreed: {done}")
            waiting = [p for p in range(len(values)) if p not in done and p not in trying]
            self._propose_all(waiting, values, trying)
            if not trying:
                self.run_for(50)
                continue
            self.run_until(lambda: any(settled(p) for p in trying), deadline - self.now_ms)
            for pos in list(trying):
                outcome = settled(pos)
                if outcome == "agreed":
                    done[pos] = trying.pop(pos)[0]
                elif outcome:
                    if not retry:
                        self.fail(f"one({values[pos]}) failed to reach agreement on "
                                  f"{expected} servers ({outcome} at index {trying[pos][0]})")
                    del trying[pos]
        return [done[p] for p in range(len(values))]

    def _propose_all(self, positions: list[int], values: list[int | str],
                     trying: dict[int, tuple[int, int]]) -> None:
        """Propose each value at the first connected node, in turn, that
        accepts it (like the lab's rotating ``starts``)."""
        used: set[int] = set()
        for pos in positions:
            for _ in range(self.n):
                self._starts = self._starts % self.n + 1
                if self._starts not in self.connected:
                    continue
                placed = self.start(self._starts, values[pos], flush=False)
                if placed is not None:
                    trying[pos] = (placed[0], self.now_ms)
                    used.add(self._starts)
                    self._starts -= 1   # stay with this leader for the next value
                    break
        for i in sorted(used):
            self.flush(i)

    def wait(self, index: int, n: int, start_term: int | None = None) -> bytes | None:
        """The lab's wait(): until ``n`` nodes applied ``index``; returns its
        data, or None if some node moved past ``start_term`` first."""
        def moved() -> bool:
            return start_term is not None and any(
                self.sim.node(i).term > start_term for i in self.sim.peers if self.alive(i))
        self.run_until(lambda: self.n_committed(index)[0] >= n or moved(), ONE_LIMIT_MS)
        count, data = self.n_committed(index)
        if count >= n:
            return data
        if moved():
            return None
        self.fail(f"only {count} decided for index {index}; wanted {n}")

    # --- state machines and logs ----------------------------------------------------------

    def model_state(self) -> dict[str, str]:
        """The record store after every entry applied anywhere, replayed
        from the log alone (no snapshots): what every node must hold."""
        machine = KVStateMachine(codec)
        checker = self.sim.checker
        for index in range(1, checker.applied_count + 1):
            data = checker.applied_data(index)
            if data:
                machine.apply(index, decode(data))
            else:
                machine.skip(index)
        return machine.data

    def kv_data(self, i: int) -> dict[str, str]:
        kv = self.sim.servers[i].kv
        assert kv is not None, f"s{i} is down"
        return kv.machine.data

    def log_entries(self, i: int) -> int:
        """Entries node ``i`` holds in memory after its snapshot."""
        log = self.sim.node(i).log
        return log.last_index - log.snapshot.index

    def raft_state_bytes(self) -> int:
        """The lab's LogSize(): the largest persisted Raft state."""
        return max(self.sim.servers[i].storage.size_bytes() for i in self.sim.peers)

    # --- message counts -----------------------------------------------------------------

    @property
    def sent(self) -> Counter[str]:
        """Messages handed to the network, before the fault layer (as the lab
        counts RPCs), from the network's own counts: by type name,
        ``"messages"`` in all, ``"requests"`` the Raft RPCs, and ``REJECTED``
        the rejected appends (counted as AppendEntriesResponse too)."""
        stats = self.sim.net.stats
        sent = Counter(stats.by_type)
        sent["messages"] = stats.sent
        sent["requests"] = sum(stats.by_type.get(kind, 0) for kind in RAFT_RPC_TYPES)
        sent[REJECTED] = self._rejected
        return sent

    def _count_rejections(self) -> None:
        """Count rejected appends as the network takes them: its stats count
        every message by type, but not whether an answer said no."""
        net = self.sim.net
        send = net.send

        def counted_send(msg: object, now_ms: int) -> None:
            if isinstance(msg, AppendEntriesResponse) and not msg.success:
                self._rejected += 1
            send(msg, now_ms)

        net.send = counted_send  # type: ignore[method-assign]
