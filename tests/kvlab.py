"""The MIT 6.824 kvraft lab's tester (3A/3B), ported onto the simulator.

:class:`KvLab` extends :class:`tests.simlab.Lab` (seed, replay command,
``why``/``fail``, connect/disconnect/crash/start1, message counts) with what
the kvraft tester adds: clerks that reach only some servers, a two-group
``partition``, and clients that run concurrently with the test's script.

Where the lab runs each client as a goroutine, a client here runs a *body*:
a generator that yields one :class:`KvOp` at a time and is sent the
finished :class:`HistoryRecord` back (:meth:`KvLab.spawn`). Every time the
lab's script lets time pass (``run_for``, ``run_until``, ``do``), the bodies
of idle clients are fed, so clients and script interleave on virtual time
exactly as goroutines interleave on real time, but reproducibly.

Differences from the lab that the tests account for:

* Server ids are ``1..n`` (the lab's server ``i`` is ``i + 1``).
* ``Simulation.add_client`` gives every clerk all servers and
  ``Simulation.partition`` heals every cut before making its own, so a
  clerk's reach (the lab's ``ConnectClient``) is kept here and its links
  cut again after every change of the network.
* The lab's Put/Get block forever; :meth:`KvLab.do` fails after
  :data:`DO_LIMIT_MS` of virtual time with the seed and replay command.

Every failure names the seed and the command that replays it.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Generator, Iterable

from mydns_lab.protocol import ClientReply, KvOp, StoreOp
from mydns_lab.sim.engine import HistoryRecord, SimClient, check_linearizable
from mydns_lab.sim.invariants import InvariantViolation
from tests.simlab import RAFT_ELECTION_TIMEOUT_MS, Lab

ELECTION_TIMEOUT_MS = RAFT_ELECTION_TIMEOUT_MS
"""The kvraft tester's electionTimeout (1 s): what it sleeps after healing
or crashing so that a new term can begin."""
DO_LIMIT_MS = 30_000
"""How long one operation of the script may take before the test fails."""

Body = Generator[StoreOp, HistoryRecord, Any]
"""A client's program: yields operations, receives each one's record, and
returns what the lab's goroutine sends on its channel (``j``)."""


class KvLab(Lab):
    """One kvraft test's cluster and clients. Construct through the test's
    ``make_kvlab`` fixture, which supplies ``replay``."""

    def __init__(self, seed: int, nodes: int, replay: str, *, unreliable: bool = False,
                 max_raft_state: int | None = None, **config: int | bool) -> None:
        super().__init__(seed, nodes, replay, max_raft_state=max_raft_state, **config)
        self.max_raft_state = max_raft_state
        self.sim.set_unreliable(unreliable)
        self._reach: dict[int, set[int]] = {}     # client id -> servers it can talk to
        self._bodies: dict[int, Body] = {}        # client id -> its running body
        self.returned: dict[int, Any] = {}        # client id -> what its body returned
        self.stop_clients = False                 # the lab's done_clients
        self.replies: list[tuple[int, ClientReply]] = []   # (ms, reply), as servers sent them
        self._tap_replies()

    # --- clients and their reach ------------------------------------------------------

    def make_client(self, servers: Iterable[int] | None = None) -> SimClient:
        """The lab's makeClient(to): a new clerk that can reach only ``servers``
        (default all). It still knows every server, as the lab's clerk does."""
        client = self.sim.add_client()
        self._reach[client.id] = set(self.sim.peers if servers is None else servers)
        self._cut_clients()
        return client

    def connect_client(self, client: SimClient, servers: Iterable[int] | None = None) -> None:
        """The lab's ConnectClient: ``client`` now reaches ``servers`` (default all)."""
        self._reach[client.id] = set(self.sim.peers if servers is None else servers)
        self._apply_links()

    def partition(self, *groups: Iterable[int]) -> None:
        """The lab's partition(p1, p2): servers talk only within their group.
        Clients keep their own reach. :meth:`connect_all`, ``connect`` and
        ``disconnect`` rebuild the links from ``connected`` (all servers
        after this), so they undo it."""
        self.connected = set(self.sim.peers)
        self.sim.partition(*(set(g) for g in groups if g))
        self._cut_clients()

    def make_partition(self) -> tuple[list[int], list[int]]:
        """The lab's make_partition: a majority holding the current leader
        (last), and the rest."""
        leader = self.sim.leader()
        if leader is None:
            self.fail("make_partition: no leader")
        others = [i for i in self.sim.peers if i != leader]
        size = self.n // 2 + 1
        return others[:size - 1] + [leader], others[size - 1:]

    def _apply_links(self) -> None:
        super()._apply_links()
        self._cut_clients()

    def _cut_clients(self) -> None:
        for client, reach in self._reach.items():
            for server in self.sim.peers:
                if server not in reach:
                    self.sim.net.cut.update({(client, server), (server, client)})

    # --- time: the script runs, clients run alongside ----------------------------------

    def run_for(self, ms: int) -> None:
        self.run_until(lambda: False, ms)

    def run_until(self, done: Callable[[], bool], limit_ms: int) -> bool:
        """Advance virtual time until ``done()`` or ``limit_ms`` pass,
        feeding every running client body its next operation as soon as its
        last one finishes."""
        end = self.now_ms + limit_ms
        with self._noted():
            while True:
                self._feed_clients()
                if done():
                    return True
                if self.now_ms >= end:
                    return False
                self.sim.run_until(lambda: done() or self._client_waiting(), end - self.now_ms)

    def spawn(self, client: SimClient, body: Body) -> None:
        """Run ``body`` on ``client`` (one of the lab's client goroutines)."""
        assert client.current is None and client.id not in self._bodies
        self._bodies[client.id] = body
        self._advance(client, None)

    def spawn_clients(self, count: int, body: Callable[[int, SimClient], Body]) -> list[SimClient]:
        """The lab's spawn_clients: ``count`` new clerks reaching every
        server, client ``i`` running ``body(i, clerk)``. Wait with
        :meth:`wait_clients`."""
        clients = [self.make_client() for _ in range(count)]
        for i, client in enumerate(clients):
            self.spawn(client, body(i, client))
        return clients

    def wait_clients(self, limit_ms: int = DO_LIMIT_MS) -> None:
        """Until every body has returned (the lab's channel receives)."""
        if not self.run_until(lambda: not self._bodies, limit_ms):
            stuck = {c: self.sim.clients[c].current for c in self._bodies}
            self.fail(f"clients still running {limit_ms} ms later: {stuck}")

    def _client_waiting(self) -> bool:
        clients = self.sim.clients
        return any(clients[c].current is None for c in self._bodies)

    def _feed_clients(self) -> None:
        for client_id in list(self._bodies):
            client = self.sim.clients[client_id]
            if client.current is None:
                self._advance(client, client.history[-1])

    def _advance(self, client: SimClient, finished: HistoryRecord | None) -> None:
        body = self._bodies[client.id]
        try:
            op = next(body) if finished is None else body.send(finished)
        except StopIteration as stop:
            del self._bodies[client.id]
            self.returned[client.id] = stop.value
            return
        self.sim.submit(client, op)  # type: ignore[arg-type]

    # --- the script's own operations (the lab's Put, Append, Get, check) ----------------

    def do(self, client: SimClient, op: StoreOp, limit_ms: int = DO_LIMIT_MS) -> HistoryRecord:
        """One operation by an idle client with no body, to completion."""
        assert client.id not in self._bodies, "this client is running a body"
        record = self.sim.submit(client, op)  # type: ignore[arg-type]
        if not self.run_until(lambda: record.return_ms is not None, limit_ms):
            self.fail(f"{op} by client {client.id} did not complete within {limit_ms} ms")
        return record

    def put(self, client: SimClient, key: str, value: str) -> None:
        self.do(client, KvOp("put", key, value))

    def append(self, client: SimClient, key: str, value: str) -> None:
        self.do(client, KvOp("append", key, value))

    def get(self, client: SimClient, key: str) -> str:
        return self.do(client, KvOp("get", key)).value

    def check(self, client: SimClient, key: str, expected: str) -> None:
        """The lab's check(): a Get must return ``expected``."""
        got = self.get(client, key)
        if got != expected:
            self.fail(f"Get({key!r}): expected:\n{expected!r}\nreceived:\n{got!r}")

    def check_linearizable(self, records: list[HistoryRecord] | None = None) -> None:
        """Every client's history (default: all of it) is linearizable."""
        try:
            check_linearizable(self.sim.history() if records is None else records)
        except InvariantViolation as exc:
            self.fail(str(exc))

    # --- the lab's size checks -------------------------------------------------------------

    def snapshot_bytes(self) -> int:
        """The lab's SnapshotSize(): the largest persisted snapshot."""
        return max(len(self.sim.servers[i].storage.load().snapshot.data)
                   for i in self.sim.peers)

    def check_log_trimmed(self) -> None:
        """With snapshots on, persisted Raft state stays within 8 times
        max_raft_state; with them off, no snapshot is ever taken."""
        if self.max_raft_state is None:
            size = self.snapshot_bytes()
            if size > 0:
                self.fail(f"snapshot of {size} bytes taken, but max_raft_state is None")
            return
        size = self.raft_state_bytes()
        if size > 8 * self.max_raft_state:
            self.fail(f"logs were not trimmed ({size} > 8*{self.max_raft_state})")

    def _tap_replies(self) -> None:
        """Record every client reply a server hands to the network."""
        net = self.sim.net
        send = net.send

        def tapped(msg: object, now_ms: int) -> None:
            if isinstance(msg, ClientReply):
                self.replies.append((now_ms, msg))
            send(msg, now_ms)

        net.send = tapped  # type: ignore[method-assign]


# --- the lab's value checks ------------------------------------------------------------------


def append_value(client: int, j: int) -> str:
    """What client ``client`` appends the ``j``-th time."""
    return f"x {client} {j} y"


def check_client_appends(lab: Lab, client: int, value: str, count: int) -> None:
    """The lab's checkClntAppends: appends 0..count-1 of ``client`` are in
    ``value`` exactly once each, in order."""
    last = -1
    for j in range(count):
        wanted = append_value(client, j)
        at = value.find(wanted)
        if at < 0:
            lab.fail(f"{client} missing element {wanted!r} in Append result {value!r}")
        if value.rfind(wanted) != at:
            lab.fail(f"duplicate element {wanted!r} in Append result {value!r}")
        if at <= last:
            lab.fail(f"wrong order for element {wanted!r} in Append result {value!r}")
        last = at


def check_concurrent_appends(lab: Lab, value: str, counts: list[int]) -> None:
    """The lab's checkConcurrentAppends: every client's appends, each once, in order."""
    for client, count in enumerate(counts):
        check_client_appends(lab, client, value, count)


def check_one_key_appends_linearizable(lab: Lab, records: list[HistoryRecord]) -> None:
    """An exact linearizability check for one key that starts with a put of
    "" and then sees only appends of distinct values and gets, each with a
    known outcome: the history the lab's UnreliableOneKey makes.

    The general checker gives no verdict on such a history in its time
    budget (every order of concurrent appends is a different state), but
    here the final value names the one order the appends took effect in,
    and each get's value the point it read at. The history is linearizable
    iff that sequence can be laid on the timeline: giving each operation in
    turn the earliest point not before its call nor before the previous
    operation's point, no point falls after its operation returned."""
    ordered = sorted(records, key=lambda r: r.call_ms)
    start, rest = ordered[0], ordered[1:]
    if (start.op.kind, start.op.value) != ("put", "") or any(r.return_ms is None for r in ordered):
        lab.fail("not a one-key append history with known outcomes")
    final = max((r for r in rest if r.op.kind == "get"), key=lambda r: r.call_ms).value
    appends = sorted((r for r in rest if r.op.kind == "append"),
                     key=lambda r: final.find(r.op.value))
    ends = {}   # value length -> how many appends it holds
    length = 0
    for n, record in enumerate(appends, 1):
        if final.find(record.op.value) != length:
            lab.fail(f"the final value {final!r} is not the appends in some order")
        length += len(record.op.value)
        ends[length] = n
    ends[0] = 0
    slots: list[list[HistoryRecord]] = [[] for _ in range(len(appends) + 1)]
    for record in rest:
        if record.op.kind == "get":
            if record.value != final[:len(record.value)] or len(record.value) not in ends:
                lab.fail(f"get at {record.call_ms}-{record.return_ms} ms read {record.value!r}, "
                         f"which no order of the appends passes through (final {final!r})")
            slots[ends[len(record.value)]].append(record)
    sequence = [start] + sorted(slots[0], key=lambda r: r.call_ms)
    for n, record in enumerate(appends, 1):
        sequence += [record] + sorted(slots[n], key=lambda r: r.call_ms)
    point = 0
    for record in sequence:
        point = max(point, record.call_ms)
        assert record.return_ms is not None
        if point > record.return_ms:
            lab.fail(f"not linearizable: {record.op} by client {record.client} "
                     f"[{record.call_ms}..{record.return_ms}] must take effect after {point} ms, "
                     f"when an operation it follows (in the order the values show) began")


# --- the lab's GenericTest -------------------------------------------------------------------


def generic_test(lab: KvLab, clients: int, *, crash: bool = False, partitions: bool = False,
                 random_keys: bool = False, iterations: int = 3, run_ms: int = 5_000) -> None:
    """The lab's GenericTest on ``lab`` (servers and reliability set by the
    caller): ``iterations`` rounds of ``clients`` clerks appending to their
    own key (or, with ``random_keys``, appending, putting and getting any
    client's key) for ``run_ms``, with a partitioner repartitioning the
    servers every 1-1.2 s, and/or every server crashed and restarted at the
    end of the round. Each round ends with every client's appends checked
    and the log size checked; the whole history must be linearizable."""
    rng = lab.rng
    ck = lab.make_client()
    for _ in range(iterations):
        lab.stop_clients = False

        def body(cli: int, _clerk: SimClient) -> Body:
            j, last = 0, ""
            if not random_keys:
                yield KvOp("put", str(cli), last)
            while not lab.stop_clients:
                key = str(rng.randrange(clients)) if random_keys else str(cli)
                new = append_value(cli, j)
                if rng.randrange(1000) < 500:
                    yield KvOp("append", key, new)
                    last += new
                    j += 1
                elif random_keys and rng.randrange(1000) < 100:
                    yield KvOp("put", key, new)
                    j += 1
                else:
                    got = (yield KvOp("get", key)).value
                    if not random_keys and got != last:
                        lab.fail(f"get wrong value, key {key}, wanted:\n{last!r}\n, got\n{got!r}")
            return j

        spawned = lab.spawn_clients(clients, body)
        partitioner = _Partitioner(lab)
        if partitions:
            lab.run_for(1_000)   # some operations without interruption
            partitioner.start()
        lab.run_for(run_ms)
        lab.stop_clients = True
        if partitions:
            lab.run_until(lambda: partitioner.stopped, 2 * ELECTION_TIMEOUT_MS)
            partitioner.stop()
            lab.connect_all()
            # A request sent to a minority returns only once its server
            # learns of the new term.
            lab.run_for(ELECTION_TIMEOUT_MS)
        if crash:
            for i in lab.sim.peers:
                lab.crash(i)
            lab.run_for(ELECTION_TIMEOUT_MS)
            for i in lab.sim.peers:
                lab.start1(i)
            lab.connect_all()
        lab.wait_clients()
        for cli, clerk in enumerate(spawned):
            value = lab.get(ck, str(cli))
            if not random_keys:
                check_client_appends(lab, cli, value, lab.returned[clerk.id])
        lab.check_log_trimmed()
    lab.check_linearizable()


class _Partitioner:
    """The lab's partitioner goroutine: a random two-way split of the
    servers every election timeout plus up to 200 ms, until stopped (it
    notices only when its sleep ends, as the lab's does)."""

    def __init__(self, lab: KvLab) -> None:
        self.lab = lab
        self.rng = random.Random(lab.rng.getrandbits(64))
        self.running = False
        self.stopped = False

    def start(self) -> None:
        self.running = True
        self._repartition()

    def stop(self) -> None:
        self.running = False

    def _repartition(self) -> None:
        lab = self.lab
        if not self.running or lab.stop_clients:
            self.stopped = True
            return
        side = {i: self.rng.randrange(2) for i in lab.sim.peers}
        lab.partition([i for i in lab.sim.peers if side[i] == 0],
                      [i for i in lab.sim.peers if side[i] == 1])
        lab.sim.schedule(ELECTION_TIMEOUT_MS + self.rng.randrange(200), "call", self._repartition)
