"""The MIT 6.824 kvraft lab's tests (3A, 3B), ported onto the simulator,
and the record store's own rules.

The lab tests follow the lab's scripts (see :mod:`tests.kvlab` for the
helpers and how they differ from the lab's). Each keeps the lab's value
checks and ends with a linearizability check of every client's history;
the simulator's safety checker (election safety, log matching, leader
completeness, state machine safety, exactly-once) runs after every event.
Everything is seeded and runs on virtual time: a failure prints the seed
and the command that replays it.

Sizes are the lab's (5 servers, 3 rounds of 5 s, 1,000 operations for
speed, 200 rounds for the snapshot size) except where a docstring says
otherwise; each test runs one to three seeds where the lab is run many
times. Tests marked "not in the lab" target what the lab checks only
indirectly.

The record-store tests drive :class:`KVStateMachine` directly (it is pure
and deterministic), plus a few through the cluster.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Callable

import pytest

from mydns_lab import codec, raftkv
from mydns_lab.core.messages import AppendEntriesResponse, Snapshot
from mydns_lab.protocol import (ClientRequest, Command, KvOp, KvSnapshot, Outcome, Record, RecordOp,
                                Status)
from mydns_lab.raft import Role
from mydns_lab.raftkv import KVStateMachine, Result
from mydns_lab.dns.tsig import tsig_owner
from mydns_lab.records import KEY_OWNER_PREFIX, json_owner, same_owner
from mydns_lab.sim.engine import TICK_MS, HistoryRecord, SimClient
from tests.kvlab import (DO_LIMIT_MS, ELECTION_TIMEOUT_MS, Body, KvLab, append_value,
                         check_client_appends, check_concurrent_appends,
                         check_one_key_appends_linearizable, generic_test)
from tests.simlab import LabFailure

MakeKvLab = Callable[..., KvLab]

MAX_RAFT_STATE = 1_000
"""The lab's maxraftstate for 3B."""


@pytest.fixture
def make_kvlab(request: pytest.FixtureRequest) -> MakeKvLab:
    """Build a :class:`KvLab` that knows how to replay the current test."""
    replay = f".venv/bin/python -m pytest '{request.node.nodeid}' -q"

    def make(seed: int, nodes: int, **options: int | bool | None) -> KvLab:
        # Shown with any failure, including a plain assert in the test body.
        request.node.add_report_section("call", "replay", f"seed={seed}\n{replay}")
        return KvLab(seed, nodes, replay, **options)

    return make


# --- 3A: key/value service without snapshots -------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2])
def test_basic(make_kvlab: MakeKvLab, seed: int) -> None:
    """TestBasic3A: one client, 3 rounds of 5 s, 5 servers."""
    generic_test(make_kvlab(seed, 5), clients=1)


@pytest.mark.parametrize("seed", [1])
def test_concurrent(make_kvlab: MakeKvLab, seed: int) -> None:
    """TestConcurrent3A: five clients."""
    generic_test(make_kvlab(seed, 5), clients=5)


@pytest.mark.parametrize("seed", [1, 2])
def test_unreliable(make_kvlab: MakeKvLab, seed: int) -> None:
    """TestUnreliable3A: five clients on the lab's unreliable network."""
    generic_test(make_kvlab(seed, 5, unreliable=True), clients=5)


@pytest.mark.parametrize("seed", [1, 2])
def test_unreliable_one_key(make_kvlab: MakeKvLab, seed: int) -> None:
    """TestUnreliableOneKey3A: five clients append ten times each to one key.

    The general linearizability checker (check_linearizable) gives no
    verdict on this history within its 60 s budget: with no read to pin the
    value, every order of the concurrent appends is a state of its own. The
    exact check for this shape of history stands in for it."""
    lab = make_kvlab(seed, 3, unreliable=True)
    ck = lab.make_client()
    lab.put(ck, "k", "")
    clients, upto = 5, 10

    def body(me: int, _clerk: SimClient) -> Body:
        for n in range(upto):
            yield KvOp("append", "k", append_value(me, n))

    appenders = lab.spawn_clients(clients, body)
    # Not in the lab: a reader alongside, whose reads are checked too.
    reader = lab.make_client()

    def reads() -> Body:
        while not lab.stop_clients:
            yield KvOp("get", "k")

    lab.spawn(reader, reads())
    if not lab.run_until(lambda: all(c.id in lab.returned for c in appenders), DO_LIMIT_MS):
        lab.fail("the appenders did not finish")
    lab.stop_clients = True
    lab.wait_clients()
    value = lab.get(ck, "k")
    check_concurrent_appends(lab, value, [upto] * clients)
    reads_seen = [r.value for r in reader.history]
    assert all(value.startswith(v) for v in reads_seen), lab.why(
        f"a read is not a prefix of the final value: {reads_seen}")
    check_one_key_appends_linearizable(lab, lab.sim.history())


def test_one_key_check_catches_what_no_order_explains(make_kvlab: MakeKvLab) -> None:
    """The exact check used above fails when the values contradict the
    timeline (it stands in for the general checker, so it must be able to)."""
    lab = make_kvlab(1, 3)

    def history(final: str, read: str) -> list[HistoryRecord]:
        return [HistoryRecord(1, KvOp("put", "k", ""), 0, 1, "ok"),
                HistoryRecord(1, KvOp("append", "k", "a"), 2, 3, "ok"),
                HistoryRecord(2, KvOp("append", "k", "b"), 2, 5, "ok"),
                HistoryRecord(3, KvOp("get", "k"), 4, 6, "ok", read),
                HistoryRecord(1, KvOp("get", "k"), 7, 8, "ok", final)]

    check_one_key_appends_linearizable(lab, history("ab", "a"))
    check_one_key_appends_linearizable(lab, history("ba", "ba"))
    for final, read in [("ba", "b"),     # "a" returned before the read began
                        ("ab", ""),      # likewise
                        ("ab", "b"),     # no order passes through "b" then "ab"
                        ("abb", "a")]:   # "b" twice
        with pytest.raises(LabFailure):
            check_one_key_appends_linearizable(lab, history(final, read))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_one_partition(make_kvlab: MakeKvLab, seed: int) -> None:
    """TestOnePartition3A: the majority makes progress, a client that can
    reach only the minority does not, and completes after the heal."""
    lab = make_kvlab(seed, 5)
    ck = lab.make_client()
    lab.put(ck, "1", "13")
    # Progress in the majority.
    p1, p2 = lab.make_partition()
    lab.partition(p1, p2)
    ckp1 = lab.make_client(p1)
    ckp2a = lab.make_client(p2)
    ckp2b = lab.make_client(p2)
    lab.put(ckp1, "1", "14")
    lab.check(ckp1, "1", "14")
    # No progress in the minority.
    put = lab.sim.submit(ckp2a, KvOp("put", "1", "15"))
    get = lab.sim.submit(ckp2b, KvOp("get", "1"))

    def minority_blocked(when: str) -> None:
        for record in (put, get):
            if record.return_ms is not None:
                lab.fail(f"{record.op.kind} in minority completed {when}: {record}")

    lab.run_for(1_000)
    minority_blocked("within 1 s")
    lab.check(ckp1, "1", "14")
    lab.put(ckp1, "1", "16")
    lab.check(ckp1, "1", "16")
    minority_blocked("while the majority worked")
    # Completion after the heal.
    lab.connect_all()
    lab.connect_client(ckp2a)
    lab.connect_client(ckp2b)
    lab.run_for(ELECTION_TIMEOUT_MS)
    for record in (put, get):
        if not lab.run_until(lambda: record.return_ms is not None, 3_000):
            lab.fail(f"{record.op.kind} did not complete after the heal")
    lab.check(ck, "1", "15")
    lab.check_linearizable()


@pytest.mark.parametrize("seed", [1, 2])
def test_many_partitions_one_client(make_kvlab: MakeKvLab, seed: int) -> None:
    """TestManyPartitionsOneClient3A: repartitioned every 1-1.2 s."""
    generic_test(make_kvlab(seed, 5), clients=1, partitions=True)


@pytest.mark.parametrize("seed", [1, 2])
def test_many_partitions_many_clients(make_kvlab: MakeKvLab, seed: int) -> None:
    """TestManyPartitionsManyClients3A."""
    generic_test(make_kvlab(seed, 5), clients=5, partitions=True)


@pytest.mark.parametrize("seed", [1, 2])
def test_persist_one_client(make_kvlab: MakeKvLab, seed: int) -> None:
    """TestPersistOneClient3A: every server crashes and restarts each round."""
    generic_test(make_kvlab(seed, 5), clients=1, crash=True)


@pytest.mark.parametrize("seed", [1])
def test_persist_concurrent(make_kvlab: MakeKvLab, seed: int) -> None:
    """TestPersistConcurrent3A."""
    generic_test(make_kvlab(seed, 5), clients=5, crash=True)


@pytest.mark.parametrize("seed", [1, 2])
def test_persist_concurrent_unreliable(make_kvlab: MakeKvLab, seed: int) -> None:
    """TestPersistConcurrentUnreliable3A."""
    generic_test(make_kvlab(seed, 5, unreliable=True), clients=5, crash=True)


@pytest.mark.parametrize("seed", [1])
def test_persist_partition(make_kvlab: MakeKvLab, seed: int) -> None:
    """TestPersistPartition3A."""
    generic_test(make_kvlab(seed, 5), clients=5, crash=True, partitions=True)


@pytest.mark.parametrize("seed", [1, 2])
def test_persist_partition_unreliable(make_kvlab: MakeKvLab, seed: int) -> None:
    """TestPersistPartitionUnreliable3A."""
    generic_test(make_kvlab(seed, 5, unreliable=True), clients=5, crash=True, partitions=True)


@pytest.mark.parametrize("seed", [1, 2])
def test_persist_partition_unreliable_linearizable(make_kvlab: MakeKvLab, seed: int) -> None:
    """TestPersistPartitionUnreliableLinearizable3A: fifteen clients on
    random keys; only the linearizability check judges the values."""
    generic_test(make_kvlab(seed, 5, unreliable=True), clients=15, crash=True,
                 partitions=True, random_keys=True)


# --- speed -----------------------------------------------------------------------------------

SPEED_OPS = 1_000
OPS_PER_HEARTBEAT = 3
"""The lab's bound: at least three operations per heartbeat interval."""


@pytest.mark.parametrize("max_raft_state", [None, MAX_RAFT_STATE], ids=["3A", "3B"])
@pytest.mark.parametrize("seed", [1])
def test_speed(make_kvlab: MakeKvLab, seed: int, max_raft_state: int | None) -> None:
    """GenericTestSpeed: 1,000 appends in a row from one client, in well
    under a heartbeat each (the lab's Append; a lost or doubled one shows
    in the final value)."""
    lab = make_kvlab(seed, 3, max_raft_state=max_raft_state)
    ck = lab.make_client()
    lab.get(ck, "x")   # a leader is elected and serving
    started = lab.now_ms
    for i in range(SPEED_OPS):
        lab.append(ck, "x", append_value(0, i))
    took_ms = lab.now_ms - started
    check_client_appends(lab, 0, lab.get(ck, "x"), SPEED_OPS)
    heartbeat_ms = lab.sim.config.heartbeat_ticks * TICK_MS
    per_op_ms = took_ms / SPEED_OPS
    assert per_op_ms < heartbeat_ms / OPS_PER_HEARTBEAT, lab.why(
        f"operations completed too slowly: {per_op_ms:.1f} ms/op > "
        f"{heartbeat_ms / OPS_PER_HEARTBEAT:.1f} ms/op")
    lab.check_log_trimmed()
    lab.check_linearizable()


# --- 3B: snapshots ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_snapshot_rpc(make_kvlab: MakeKvLab, seed: int) -> None:
    """TestSnapshotRPC3B: a server cut off while the others compact their
    log past it is brought back by InstallSnapshot, and ends with the same
    state as the others."""
    lab = make_kvlab(seed, 3, max_raft_state=MAX_RAFT_STATE)
    ck = lab.make_client()
    lab.put(ck, "a", "A")
    lab.check(ck, "a", "A")
    # A bunch of puts into the majority partition.
    lab.partition([1, 2], [3])
    ck1 = lab.make_client([1, 2])
    for i in range(50):
        lab.put(ck1, str(i), str(i))
    lab.run_for(ELECTION_TIMEOUT_MS)
    lab.put(ck1, "b", "B")
    # The majority has thrown away most of its log.
    lab.check_log_trimmed()
    lagging = lab.sim.node(3).log.last_index
    compacted = min(lab.sim.node(i).log.snapshot.index for i in (1, 2))
    assert compacted > lagging, lab.why(
        f"the log was not compacted past s3 (snapshots at {compacted}, s3 ends at {lagging})")
    # A group that needs the lagging server, so it has to catch up.
    seen, installs = len(lab.sim.trace_lines), lab.sent["InstallSnapshot"]
    lab.partition([1, 3], [2])
    ck2 = lab.make_client([1, 3])
    lab.put(ck2, "c", "C")
    lab.put(ck2, "d", "D")
    lab.check(ck2, "a", "A")
    lab.check(ck2, "b", "B")
    lab.check(ck2, "1", "1")
    lab.check(ck2, "49", "49")
    assert lab.sent["InstallSnapshot"] > installs, lab.why("no InstallSnapshot was sent")
    assert any("s3 restored snapshot" in line for line in lab.sim.trace_lines[seen:]), lab.why(
        "s3 did not catch up by InstallSnapshot")
    # Now everybody.
    lab.partition([1, 2, 3])
    lab.put(ck, "e", "E")
    lab.check(ck, "c", "C")
    lab.check(ck, "e", "E")
    lab.check(ck, "1", "1")
    last = max(lab.sim.node(i).log.last_index for i in lab.sim.peers)
    lab.run_until(lambda: all(lab.sim.node(i).log.applied >= last for i in lab.sim.peers), 5_000)
    states = {i: lab.kv_data(i) for i in lab.sim.peers}
    assert all(s == states[1] for s in states.values()), lab.why(f"states differ: {states}")
    assert states[1] == lab.model_state(), lab.why("state differs from the replayed log")
    lab.check_linearizable()


MAX_SNAPSHOT_STATE = 500
"""The lab's bound on one snapshot's bytes in TestSnapshotSize3B."""


@pytest.mark.parametrize("seed", [1, 2])
def test_snapshot_size(make_kvlab: MakeKvLab, seed: int) -> None:
    """TestSnapshotSize3B: 200 rounds of put/get on one key; the log is
    trimmed and the snapshot stays small."""
    lab = make_kvlab(seed, 3, max_raft_state=MAX_RAFT_STATE)
    ck = lab.make_client()
    for _ in range(200):
        lab.put(ck, "x", "0")
        lab.check(ck, "x", "0")
        lab.put(ck, "x", "1")
        lab.check(ck, "x", "1")
        lab.check_log_trimmed()
    size = lab.snapshot_bytes()
    assert 0 < size <= MAX_SNAPSHOT_STATE, lab.why(
        f"snapshot size {size} not in (0, {MAX_SNAPSHOT_STATE}]")
    lab.check_linearizable()


@pytest.mark.parametrize("seed", [1, 2])
def test_snapshot_recover(make_kvlab: MakeKvLab, seed: int) -> None:
    """TestSnapshotRecover3B: crash and restart every round, with snapshots."""
    generic_test(make_kvlab(seed, 5, max_raft_state=MAX_RAFT_STATE), clients=1, crash=True)


@pytest.mark.parametrize("seed", [1])
def test_snapshot_recover_many_clients(make_kvlab: MakeKvLab, seed: int) -> None:
    """TestSnapshotRecoverManyClients3B: twenty clients; rounds of 1.5 s
    instead of the lab's 5 s to keep the run short."""
    generic_test(make_kvlab(seed, 5, max_raft_state=MAX_RAFT_STATE), clients=20, crash=True,
                 run_ms=1_500)


@pytest.mark.parametrize("seed", [1, 2])
def test_snapshot_unreliable(make_kvlab: MakeKvLab, seed: int) -> None:
    """TestSnapshotUnreliable3B."""
    generic_test(make_kvlab(seed, 5, unreliable=True, max_raft_state=MAX_RAFT_STATE), clients=5)


@pytest.mark.parametrize("seed", [1, 2])
def test_snapshot_unreliable_recover(make_kvlab: MakeKvLab, seed: int) -> None:
    """TestSnapshotUnreliableRecover3B."""
    generic_test(make_kvlab(seed, 5, unreliable=True, max_raft_state=MAX_RAFT_STATE),
                 clients=5, crash=True)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_snapshot_unreliable_recover_concurrent_partition(make_kvlab: MakeKvLab,
                                                          seed: int) -> None:
    """TestSnapshotUnreliableRecoverConcurrentPartition3B."""
    generic_test(make_kvlab(seed, 5, unreliable=True, max_raft_state=MAX_RAFT_STATE),
                 clients=5, crash=True, partitions=True)


@pytest.mark.parametrize("seed", [1, 2])
def test_snapshot_unreliable_recover_concurrent_partition_linearizable(
        make_kvlab: MakeKvLab, seed: int) -> None:
    """TestSnapshotUnreliableRecoverConcurrentPartitionLinearizable3B:
    fifteen clients on random keys."""
    generic_test(make_kvlab(seed, 5, unreliable=True, max_raft_state=MAX_RAFT_STATE),
                 clients=15, crash=True, partitions=True, random_keys=True)


# --- the server's answers: stale leaders, lost leadership, retried requests ------------------


@pytest.mark.parametrize("check_quorum", [False, True], ids=["no-check-quorum", "check-quorum"])
@pytest.mark.parametrize("seed", [1, 2])
def test_isolated_leader_serves_no_stale_read(make_kvlab: MakeKvLab, seed: int,
                                              check_quorum: bool) -> None:
    """Not in the lab: a leader cut off from the rest must not answer a get
    from its own state while the majority moves on. Without check-quorum
    it keeps believing it leads, so only ReadIndex (a heartbeat round
    acknowledged by a majority) stands between it and a stale read."""
    lab = make_kvlab(seed, 3, check_quorum=check_quorum)
    ck = lab.make_client()
    lab.put(ck, "k", "old")
    old = lab.sim.leader()
    assert old is not None
    rest = [i for i in lab.sim.peers if i != old]
    lab.partition([old], rest)
    writer = lab.make_client(rest)
    reader = lab.make_client([old])
    lab.put(writer, "k", "new")
    read = lab.sim.submit(reader, KvOp("get", "k"))
    lab.run_for(2 * ELECTION_TIMEOUT_MS)
    if read.return_ms is not None:
        lab.fail(f"the cut-off s{old} answered a read: {read}")
    lab.connect_all()
    lab.connect_client(reader)
    if not lab.run_until(lambda: read.return_ms is not None, 5_000):
        lab.fail("the read did not complete after the heal")
    assert read.value == "new", lab.why(f"read {read.value!r} after 'new' was written")
    lab.check_linearizable()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_pending_requests_answered_retry_on_lost_leadership(make_kvlab: MakeKvLab,
                                                            seed: int) -> None:
    """A write and a read pending on a leader that loses leadership are
    answered RETRY the moment it steps down (KVServer._fail_pending), not
    left to the clerk's timeout."""
    lab = make_kvlab(seed, 3)
    ck = lab.make_client()
    lab.put(ck, "k", "a")
    leader = lab.sim.leader()
    assert leader is not None
    lab.disconnect(leader)   # it cannot commit; check-quorum will depose it
    address = 900   # no simulated client: the replies are seen only by the tap
    write = ClientRequest(address, leader, address, 1, KvOp("put", "k", "lost"))
    read = ClientRequest(address, leader, address + 1, 1, KvOp("get", "k"))
    lab.sim.net.send(write, lab.now_ms)
    lab.sim.net.send(read, lab.now_ms)
    node = lab.sim.servers[leader].node
    assert node is not None
    if not lab.run_until(lambda: node.role is not Role.LEADER, 2 * ELECTION_TIMEOUT_MS):
        lab.fail(f"the cut-off s{leader} never stepped down")
    stepped_down_ms = lab.now_ms
    answers = {(r.client_id, r.seq): (ms, r.status) for ms, r in lab.replies
               if r.src == leader and r.dst == address}
    for req in (write, read):
        assert answers.get((req.client_id, req.seq)) == (stepped_down_ms, Status.RETRY), lab.why(
            f"{req.op} pending on s{leader}: answer {answers.get((req.client_id, req.seq))}, "
            f"expected RETRY at the step-down ({stepped_down_ms} ms)")
    lab.connect_all()
    lab.check(ck, "k", "a")   # the write never left the old leader
    lab.check_linearizable()


@pytest.mark.parametrize("seed", [1, 2])
def test_duplicate_requests_take_effect_once(make_kvlab: MakeKvLab, seed: int) -> None:
    """Copies of one (client, seq) sent at once, and again after it was
    applied, take effect once and all get its result; an older seq after a
    newer one is answered OK and changes nothing."""
    lab = make_kvlab(seed, 3)
    ck = lab.make_client()
    lab.put(ck, "k", "")
    leader = lab.sim.leader()
    assert leader is not None
    address = 900

    def send(seq: int, value: str, copies: int) -> None:
        for _ in range(copies):
            lab.sim.net.send(ClientRequest(address, leader, address, seq,
                                           KvOp("append", "k", value)), lab.now_ms)
        wanted = len(lab.replies) + copies
        if not lab.run_until(lambda: len(lab.replies) >= wanted, 2_000):
            lab.fail(f"request {seq} was not answered {copies} times")

    send(1, "x", copies=3)       # proposed three times, applied once
    send(1, "x", copies=1)       # answered from the session table
    send(2, "y", copies=1)
    send(1, "x", copies=1)       # older than the last: no effect
    statuses = [r.status for _, r in lab.replies if r.dst == address]
    assert statuses == [Status.OK] * 6, lab.why(f"answers: {statuses}")
    # The raw requests are in no client's history, so no linearizability
    # check here: the value says it all.
    lab.check(ck, "k", "xy")


@pytest.mark.parametrize("seed", [1, 2])
def test_duplicate_after_restart_from_snapshot(make_kvlab: MakeKvLab, seed: int) -> None:
    """A retry that arrives after every server restarted from a snapshot
    taken past the original still takes effect once: the session table
    travels in the snapshot."""
    lab = make_kvlab(seed, 3, max_raft_state=MAX_RAFT_STATE)
    ck = lab.make_client()
    lab.put(ck, "k", "")
    address = 900
    retried = ClientRequest(address, 0, address, 1, KvOp("append", "k", "once"))

    def send_to_leader() -> None:
        leader = lab.sim.leader()
        assert leader is not None
        answered = len(lab.replies)
        lab.sim.net.send(dataclasses.replace(retried, dst=leader), lab.now_ms)
        if not lab.run_until(lambda: any(r.dst == address for _, r in lab.replies[answered:]),
                             2_000):
            lab.fail("the request was not answered")

    send_to_leader()
    index = lab.sim.checker.applied_count
    for i in range(40):
        lab.put(ck, f"fill{i}", "x" * 20)
    snapshots = {i: lab.sim.node(i).log.snapshot.index for i in lab.sim.peers}
    assert min(snapshots.values()) > index, lab.why(f"no snapshot past {index}: {snapshots}")
    for i in lab.sim.peers:
        lab.start1(i)
    lab.connect_all()
    lab.check(ck, "k", "once")
    send_to_leader()
    statuses = [r.status for _, r in lab.replies if r.dst == address]
    assert statuses == [Status.OK, Status.OK], lab.why(f"answers: {statuses}")
    lab.check(ck, "k", "once")


# --- the record store's rules, on the state machine ------------------------------------------

OWNER_A = json_owner("token-a")
OWNER_B = json_owner("token-b")


class Applier:
    """A state machine fed commands as a log would: each call is the next
    index and, per client, the next sequence number."""

    def __init__(self) -> None:
        self.machine = KVStateMachine(codec)
        self.index = 0
        self.seqs: collections.Counter[int] = collections.Counter()

    def __call__(self, op: KvOp | RecordOp, client: int = 1, time_ms: int = 0) -> Result:
        self.index += 1
        self.seqs[client] += 1
        result, effective = self.machine.apply(
            self.index, Command(client, self.seqs[client], op, time_ms))
        assert effective
        return result

    def state(self) -> tuple:
        m = self.machine
        return dict(m.data), dict(m.records), m.serial, list(m.changes)


def set_op(name: str, *addresses: str, owner: str = OWNER_A, seq: int = 1) -> RecordOp:
    """A claim or update of ``name``; addresses with a colon go in ``ipv6``."""
    return RecordOp("record_set", name, ipv4=tuple(a for a in addresses if ":" not in a),
                    ipv6=tuple(a for a in addresses if ":" in a), owner=owner, seq=seq)


def test_first_set_claims_the_name_for_its_owner() -> None:
    apply = Applier()
    assert apply(set_op("alice-pc", "192.0.2.1"), time_ms=5) == Result(Status.OK, outcome=Outcome.CLAIMED)
    record = apply.machine.records["alice-pc"]
    assert record == Record("alice-pc", ("192.0.2.1",), (), (), OWNER_A, 1, 5)
    before = apply.state()
    # Another owner can neither change nor delete it, and nothing changes.
    refused = apply(set_op("alice-pc", "192.0.2.66", owner=OWNER_B, seq=9))
    assert refused.status == Status.OWNED and "owned by another key" in refused.value
    refused = apply(RecordOp("record_delete", "alice-pc", owner=OWNER_B))
    assert refused.status == Status.OWNED and "owned by another key" in refused.value
    refused = apply(RecordOp("record_set", "alice-pc", ipv4=("192.0.2.66",), seq=9))
    assert refused.status == Status.ERROR and "owner's token" in refused.value
    assert apply.state() == before
    # The owner can.
    assert apply(set_op("alice-pc", "192.0.2.2", seq=2)) == Result(Status.OK, outcome=Outcome.UPDATED)
    assert apply.machine.records["alice-pc"].ipv4 == ("192.0.2.2",)
    assert apply(RecordOp("record_delete", "alice-pc", owner=OWNER_A)).outcome == Outcome.DELETED
    assert "alice-pc" not in apply.machine.records
    # Deleted, the name is free for anyone.
    assert apply(set_op("alice-pc", "192.0.2.3", owner=OWNER_B)).outcome == Outcome.CLAIMED
    missing = apply(RecordOp("record_delete", "nobody", owner=OWNER_A))
    assert missing.status == Status.ERROR and "no such name" in missing.value


def test_a_key_keeps_the_names_it_wrote_before_its_owner_was_marked() -> None:
    """Names written through a TSIG key were once owned by the bare hash
    that now follows ``key:``: the key still owns them (its next write
    stores the marked form), and no one else does."""
    apply = Applier()
    marked = tsig_owner("laptop")
    bare = marked[len(KEY_OWNER_PREFIX):]
    apply(set_op("laptop", "192.0.2.1", owner=bare))           # as an earlier version wrote it
    assert apply(set_op("laptop", "192.0.2.2", owner=marked, seq=2)).outcome == Outcome.UPDATED
    assert apply.machine.records["laptop"].owner == marked
    before = apply.state()
    assert apply(set_op("laptop", "192.0.2.6", owner=bare, seq=3)).status == Status.OWNED
    assert apply(set_op("laptop", "192.0.2.6", owner=tsig_owner("other"), seq=3)).status == \
        Status.OWNED
    assert apply.state() == before
    assert not same_owner(marked, KEY_OWNER_PREFIX + json_owner("t"))


def test_older_upload_never_overwrites_a_newer_one() -> None:
    apply = Applier()
    apply(set_op("host", "192.0.2.5", seq=5))
    before = apply.state()
    stale = apply(set_op("host", "192.0.2.4", seq=4))
    assert stale.status == Status.STALE
    assert "sequence 4 is older than the stored 5" in stale.value, stale.value
    assert apply.state() == before
    # An equal sequence number is accepted (a repeated upload).
    assert apply(set_op("host", "192.0.2.6", seq=5)).outcome == Outcome.UPDATED
    assert apply.machine.records["host"].ipv4 == ("192.0.2.6",)
    assert apply(set_op("host", "192.0.2.7", seq=6)).outcome == Outcome.UPDATED
    assert apply.machine.records["host"].seq == 6


@pytest.mark.parametrize("given, stored", [
    ("Alice-PC", "alice-pc"),
    ("WWW.Example.", "www.example"),
    ("a" * 63, "a" * 63),
    (".".join(["a" * 63] * 3 + ["b" * 61]), ".".join(["a" * 63] * 3 + ["b" * 61])),  # 253 octets
    ("0-9", "0-9"),
])
def test_valid_names_are_stored_lower_case(given: str, stored: str) -> None:
    apply = Applier()
    assert apply(set_op(given, "192.0.2.1")).outcome == Outcome.CLAIMED
    assert list(apply.machine.records) == [stored]
    found = apply.machine.query(RecordOp("record_get", given.upper()))
    assert [r.name for r in found.records] == [stored]


@pytest.mark.parametrize("name, reason", [
    ("", "the name is empty"),
    ("-alice", "label '-alice'"),
    ("alice-", "label 'alice-'"),
    ("al_ice", "label 'al_ice'"),
    ("al ice", "label 'al ice'"),
    ("h\u00e9llo", "label 'h\u00e9llo'"),
    ("a..b", "empty label"),
    ("a" * 64, "64 octets; at most 63"),
    (".".join(["a" * 63] * 3 + ["b" * 62]), "254 octets long; at most 253"),
])
def test_invalid_names_are_refused_with_a_reason(name: str, reason: str) -> None:
    apply = Applier()
    apply(set_op("kept", "192.0.2.1"))
    before = apply.state()
    for op in (set_op(name, "192.0.2.1"), RecordOp("record_delete", name, owner=OWNER_A)):
        result = apply(op)
        assert result.status == Status.ERROR and reason in result.value, result
    assert apply.machine.query(RecordOp("record_get", name)).status == Status.ERROR
    assert apply.state() == before


@pytest.mark.parametrize("addresses, reason", [
    (("300.1.1.1",), "'300.1.1.1' is not an IPv4 or IPv6 address"),
    (("192.0.2.1", "alice"), "'alice' is not an IPv4 or IPv6 address"),
    (("2001:db8::g",), "'2001:db8::g' is not"),
    ((), "no address given for 'host'"),
    (("192.0.2.1",) * 33, "33 addresses given; at most 8 IPv4 and 8 IPv6 allowed"),
    (tuple(f"192.0.2.{i}" for i in range(1, 10)), "9 IPv4 addresses given; at most 8 allowed"),
    (tuple(f"2001:db8::{i:x}" for i in range(1, 10)), "9 IPv6 addresses given; at most 8 allowed"),
])
def test_invalid_addresses_are_refused_with_a_reason(addresses: tuple[str, ...],
                                                     reason: str) -> None:
    apply = Applier()
    apply(set_op("host", "192.0.2.1"))
    before = apply.state()
    result = apply(set_op("host", *addresses, seq=2))
    assert result.status == Status.ERROR and reason in result.value, result
    assert apply.state() == before


def test_eight_addresses_of_each_family_are_stored() -> None:
    apply = Applier()
    eight = [f"192.0.2.{i}" for i in range(1, 9)] + [f"2001:db8::{i:x}" for i in range(1, 9)]
    assert apply(set_op("host", *eight)).status == Status.OK
    record = apply.machine.records["host"]
    assert (len(record.ipv4), len(record.ipv6)) == (8, 8)


@pytest.mark.parametrize("ipv4, ipv6, reason", [
    (("2001:db8::1",), (), "2001:db8::1 is not an IPv4 address"),
    ((), ("192.0.2.1",), "192.0.2.1 is not an IPv6 address"),
])
def test_addresses_must_come_split_by_family(ipv4: tuple[str, ...], ipv6: tuple[str, ...],
                                             reason: str) -> None:
    """The sender splits addresses by family; the store never guesses."""
    apply = Applier()
    result = apply(RecordOp("record_set", "host", ipv4=ipv4, ipv6=ipv6, owner=OWNER_A))
    assert result.status == Status.ERROR and reason in result.value, result
    assert apply.machine.records == {}


def test_addresses_are_stored_in_canonical_form() -> None:
    apply = Applier()
    op = RecordOp("record_set", "host", ipv4=("192.0.2.9", " 192.0.2.1"),
                  ipv6=("2001:DB8:0::1", "2001:db8::1", "::FFFF:1.2.3.4"), owner=OWNER_A)
    apply(op)
    record = apply.machine.records["host"]
    assert record.ipv4 == ("192.0.2.1", "192.0.2.9")
    assert record.ipv6 == ("::ffff:102:304", "2001:db8::1")   # sorted by value


def test_a_retried_command_takes_effect_once() -> None:
    machine = KVStateMachine(codec)
    first = Command(7, 1, KvOp("cas", "k", "v", expected=""))
    assert machine.apply(1, first) == (Result(Status.OK, "true"), True)
    # The retry lands later in the log: it is answered with the first
    # result (the cas would fail now) and changes nothing.
    assert machine.apply(2, first) == (Result(Status.OK, "true"), False)
    assert machine.data == {"k": "v"}
    assert machine.cached_result(7, 1) == Result(Status.OK, "true")
    claim = Command(7, 2, set_op("host", "192.0.2.1"))
    assert machine.apply(3, claim) == (Result(Status.OK, outcome=Outcome.CLAIMED), True)
    assert machine.apply(4, claim) == (Result(Status.OK, outcome=Outcome.CLAIMED), False)
    assert machine.serial == 1
    # An older request arriving late is acknowledged and ignored.
    assert machine.apply(5, Command(7, 1, KvOp("append", "k", "!"))) == (Result(Status.OK), False)
    assert machine.data == {"k": "v"} and machine.applied_index == 5
    # Other clients have their own sequence.
    assert machine.apply(6, Command(8, 1, KvOp("append", "k", "!")))[1]
    assert machine.data == {"k": "v!"}


def test_snapshot_restore_round_trip() -> None:
    apply = Applier()
    apply(KvOp("put", "a", "1"), client=1)
    apply(KvOp("append", "a", "2"), client=2)
    apply(set_op("host", "192.0.2.1"), client=3, time_ms=42)
    apply(set_op("host", "192.0.2.2", owner=OWNER_B), client=4)   # refused: in the session
    apply(RecordOp("record_set", "v6", ipv6=("2001:DB8::1",), owner=OWNER_B), client=5)
    original = apply.machine
    data = original.snapshot()
    copy = KVStateMachine(codec)
    copy.restore(Snapshot(apply.index, 3, data))
    assert copy.data == original.data == {"a": "12"}
    assert copy.records == original.records
    assert copy.serial == original.serial == 2
    assert copy.sessions == original.sessions
    assert copy.applied_index == apply.index
    assert copy.snapshot() == data
    # Dedup survives the snapshot: client 4's refusal is still its answer,
    # with its reason as a status (front ends reply by it, not the words).
    retry = Command(4, 1, set_op("host", "192.0.2.2", owner=OWNER_B))
    result, effective = copy.apply(apply.index + 1, retry)
    assert not effective and result.status == Status.OWNED
    assert "owned by another key" in result.value
    # Restoring the empty snapshot empties the machine.
    copy.restore(Snapshot())
    assert (copy.data, copy.records, copy.sessions, copy.serial) == ({}, {}, {}, 0)


def test_a_full_listing_comes_in_pages_in_name_order() -> None:
    apply = Applier()
    count = 2 * raftkv.FULL_PAGE + 7
    for i in range(count):
        apply(set_op(f"h{i:05}", "192.0.2.1"))
    machine = apply.machine
    pages = [machine.changes_since(count + 5)]     # a serial it cannot answer with a delta
    while pages[-1].more:
        pages.append(machine.changes_since(count + 5, after=pages[-1].records[-1].name))
    assert [len(p.records) for p in pages] == [raftkv.FULL_PAGE, raftkv.FULL_PAGE, 7]
    assert all(p.full and p.serial == machine.serial for p in pages)
    names = [r.name for p in pages for r in p.records]
    assert names == sorted(machine.records)


def test_snapshot_without_outcomes_restores() -> None:
    """A snapshot written before session outcomes had their own field
    restores, its sessions' outcomes empty."""
    old = KvSnapshot((), (Record("host", ("192.0.2.1",), owner=OWNER_A, seq=1),),
                     ((4, 1, Status.OK, ""),), 1)
    machine = KVStateMachine(codec)
    machine.restore(Snapshot(3, 1, codec.encode(old)))
    assert machine.cached_result(4, 1) == Result(Status.OK)
    assert machine.records["host"].ipv4 == ("192.0.2.1",)


def test_record_changes_answers_deltas_and_full_lists() -> None:
    apply = Applier()
    machine = apply.machine

    def changes(serial: int) -> Result:
        return machine.query(RecordOp("record_changes", since=serial))

    assert changes(0) == Result(Status.OK, serial=0)
    apply(set_op("a", "192.0.2.1"))
    apply(set_op("b", "192.0.2.2"))
    apply(set_op("a", "192.0.2.3", seq=2))
    apply(RecordOp("record_delete", "b", owner=OWNER_A))
    apply(KvOp("put", "unrelated", "x"))   # not a record change
    assert machine.serial == 4
    # Nothing new since the caller's serial.
    assert changes(4) == Result(Status.OK, serial=4)
    # Each changed name once, in the order of its first change; a deleted
    # name as a record with no owner.
    delta = changes(0)
    assert (delta.serial, delta.full) == (4, False)
    assert delta.records == (machine.records["a"], Record("b"))
    assert changes(2).records == (machine.records["a"], Record("b"))
    assert changes(3).records == (Record("b"),)
    # A serial from the future (the store was rebuilt): the full list.
    assert changes(9) == Result(Status.OK, records=(machine.records["a"],), serial=4, full=True)
    # Older than the change log reaches: the full list.
    machine.changes = collections.deque(machine.changes, maxlen=2)
    assert not changes(2).full
    assert changes(1) == Result(Status.OK, records=(machine.records["a"],), serial=4, full=True)
    # A replica restored from a snapshot has no change log: full answers,
    # except to a caller already up to date.
    copy = KVStateMachine(codec)
    copy.restore(Snapshot(apply.index, 1, machine.snapshot()))
    assert copy.query(RecordOp("record_changes", since=3)).full
    assert copy.query(RecordOp("record_changes", since=4)) == Result(Status.OK, serial=4)


def test_a_command_from_an_older_log_is_checked_when_applied() -> None:
    """Entries written before the leader checked at proposal carry
    ``checked`` False: apply still puts them in stored form, or refuses."""
    machine = KVStateMachine(codec)
    old = Command(1, 1, set_op("Alice-PC", "2001:DB8:0::1"), 5)
    assert not old.checked
    assert machine.apply(1, old)[0] == Result(Status.OK, outcome=Outcome.CLAIMED)
    assert machine.records["alice-pc"].ipv6 == ("2001:db8::1",)
    result, _ = machine.apply(2, Command(2, 1, set_op("alice_pc", "192.0.2.1")))
    assert result.status == Status.ERROR and "'alice_pc'" in result.value
    assert "alice_pc" not in machine.records


def test_a_checked_command_is_not_checked_again() -> None:
    """The leader's check stands for every replica: apply takes a checked
    op as it is (what the flag saves is this second look)."""
    machine = KVStateMachine(codec)
    # Not in stored form, which no leader would log: it shows apply kept it as given.
    checked = Command(1, 1, set_op("Alice-PC", "192.0.2.1"), 5, checked=True)
    assert codec.decode(codec.encode(checked)) == checked
    machine.apply(1, checked)
    assert list(machine.records) == ["Alice-PC"]


# --- the record store's rules, through the cluster -------------------------------------------


@pytest.mark.parametrize("seed", [1, 2])
def test_records_through_the_cluster(make_kvlab: MakeKvLab, seed: int) -> None:
    """Claims, refusals, stale uploads and a watch through clerks and Raft;
    every server ends with the same records, also after a crash of all."""
    lab = make_kvlab(seed, 3, max_raft_state=MAX_RAFT_STATE)
    alice, bob, watcher = lab.make_client(), lab.make_client(), lab.make_client()
    lab.put(alice, "k", "v")   # a leader is serving

    def do(client: SimClient, op: RecordOp) -> tuple[str, str]:
        """(status, what came back: the outcome, the serial of a read, or the reason)."""
        finished = lab.do(client, op).finished
        assert finished is not None
        if finished.status != Status.OK:
            return finished.status, finished.value
        return finished.status, finished.outcome or str(finished.serial)

    assert do(alice, set_op("Alice-PC", "192.0.2.1", seq=3)) == (Status.OK, "claimed")
    status, why = do(bob, set_op("alice-pc", "192.0.2.66", owner=OWNER_B, seq=9))
    assert status == Status.OWNED and "owned by another key" in why, why
    status, why = do(alice, set_op("alice-pc", "192.0.2.2", seq=2))
    assert status == Status.STALE and "older than the stored 3" in why, why
    leader = lab.sim.node(lab.check_one_leader())
    last_index = leader.log.last_index
    status, why = do(alice, set_op("alice_pc", "192.0.2.2", seq=4))
    assert status == Status.ERROR and "'alice_pc'" in why, why
    assert leader.log.last_index == last_index, "a refused op was proposed: refuse at submit"
    # A watch at the current serial is held until the next change.
    watch = lab.sim.submit(watcher, RecordOp("record_changes", since=1))
    v6 = RecordOp("record_set", "alice-pc", ipv6=("2001:DB8:0::1",), owner=OWNER_A, seq=4)
    assert do(alice, v6) == (Status.OK, "updated")
    lab.run_until(lambda: watch.return_ms is not None, 1_000)
    assert watch.finished is not None, lab.why(f"watch: {watch}")
    assert (watch.status, watch.finished.serial, watch.finished.full) == (Status.OK, 2, False), \
        lab.why(f"watch: {watch}")
    assert do(alice, RecordOp("record_get", "ALICE-PC")) == (Status.OK, "2")
    for i in lab.sim.peers:
        lab.start1(i)
    lab.connect_all()
    assert do(bob, RecordOp("record_get", "alice-pc")) == (Status.OK, "2")
    expected = Record("alice-pc", (), ("2001:db8::1",), (), OWNER_A, 4)
    held = {}
    for i in lab.sim.peers:
        kv = lab.sim.servers[i].kv
        assert kv is not None
        assert lab.run_until(lambda: kv.machine.serial == 2, 2_000), lab.why(f"s{i} behind")
        held[i] = kv.machine.records
    assert all(records == held[1] for records in held.values()), lab.why(f"records: {held}")
    got = held[1]["alice-pc"]
    assert dataclasses.replace(got, updated_ms=0) == expected, lab.why(f"stored {got}")
    assert got.updated_ms > 0, lab.why("the change was not stamped with the leader's time")
    lab.check_linearizable([r for r in lab.sim.history() if isinstance(r.op, KvOp)])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_first_watch_after_a_restart_holds_every_record(make_kvlab: MakeKvLab, seed: int) -> None:
    """A front end that starts watching from nothing right after the whole
    cluster restarted gets, in its very first answer, every record that was
    acknowledged before: a new leader answers watches only once its applied
    state is current. Otherwise DNS would deny names that exist."""
    lab = make_kvlab(seed, 3)
    owner = lab.make_client()
    names = [f"host{i}" for i in range(40)]
    for i, name in enumerate(names):
        assert lab.do(owner, set_op(name, f"192.0.2.{i + 1}")).status == Status.OK
    for i in lab.sim.peers:
        lab.start1(i)
    lab.connect_all()
    watcher = lab.make_client()
    watch = lab.do(watcher, RecordOp("record_changes", since=0), limit_ms=5_000)
    assert watch.finished is not None and watch.status == Status.OK, lab.why(f"watch: {watch}")
    got = sorted(r.name for r in watch.finished.records if r.owner)
    assert got == sorted(names), lab.why(f"first watch after restart held {len(got)} of "
                                         f"{len(names)} names, serial {watch.finished.serial}")


@pytest.mark.parametrize("seed", [1, 2])
def test_a_new_leader_holds_watches_until_its_state_is_current(make_kvlab: MakeKvLab,
                                                             seed: int) -> None:
    """Until an entry of its own term commits, a leader's commit index (and
    so its applied state) may lag the cluster's: it answers no watch then,
    so no front end loads a copy that misses acknowledged records."""
    lab = make_kvlab(seed, 3)
    owner = lab.make_client()
    assert lab.do(owner, set_op("kept", "192.0.2.1")).status == Status.OK
    for i in lab.sim.peers:
        lab.start1(i)
    lab.connect_all()
    assert lab.run_until(lambda: lab.sim.leader() is not None, 5_000), lab.why("no leader")
    leader = lab.sim.leader()
    assert leader is not None
    # The followers' acknowledgements of appends no longer reach the leader,
    # so its no-op cannot commit; heartbeats still flow, so it keeps leading.
    send = lab.sim.net.send

    def drop_append_acks(msg: object, now_ms: int) -> None:
        if not (isinstance(msg, AppendEntriesResponse) and msg.dst == leader):
            send(msg, now_ms)

    lab.sim.net.send = drop_append_acks  # type: ignore[method-assign]
    node = lab.sim.node(leader)
    assert node.log.term_at(node.log.committed) != node.term, lab.why("no-op already committed")
    watch = lab.sim.submit(lab.make_client([leader]), RecordOp("record_changes", since=0))
    lab.run_for(2_000)   # time for the clerk to find the leader and for several holds
    assert node.log.term_at(node.log.committed) != node.term, lab.why("no-op committed in the cut")
    assert watch.return_ms is None, lab.why(f"answered before the no-op committed: {watch}")
    assert lab.sim.leader() == leader, lab.why("the leader stepped down")
    lab.sim.net.send = send  # type: ignore[method-assign]
    assert lab.run_until(lambda: watch.return_ms is not None, 5_000), lab.why("never answered")
    assert watch.finished is not None
    assert [r.name for r in watch.finished.records] == ["kept"], lab.why(f"watch: {watch}")


def test_a_leader_with_a_full_disk_refuses_writes_and_serves_reads(make_kvlab: MakeKvLab) -> None:
    lab = make_kvlab(1, 3)
    client = lab.make_client()
    assert lab.do(client, set_op("before", "192.0.2.1")).status == Status.OK
    leader = lab.sim.leader()
    assert leader is not None
    kv = lab.sim.servers[leader].kv
    assert kv is not None
    kv.disk_full = "the disk of /data is full"
    refused = lab.do(client, set_op("during", "192.0.2.2"))
    assert (refused.status, refused.value) == (Status.NO_SPACE, "the disk of /data is full")
    assert refused.finished is not None and refused.finished.attempts == 1, \
        lab.why("a full disk is an answer, not a reason to try every server")
    read = lab.do(client, RecordOp("record_get", "before"))
    assert read.status == Status.OK and read.finished and read.finished.records
    kv.disk_full = ""
    # The same name goes through once space is back: the refusal was not kept.
    assert lab.do(client, set_op("during", "192.0.2.2")).status == Status.OK
