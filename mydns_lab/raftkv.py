"""The replicated record store: a state machine and the server around it.

:class:`KVStateMachine` is deterministic: the same commands in the same
order give the same state on every replica. It keeps, per client, the last
sequence number applied and its result, so a retried command takes effect
once.

:class:`KVServer` hosts the state machine on a :class:`RaftNode`: writes
become proposals, reads become ReadIndex rounds, and every request gets an
answer through the ``reply`` callback: a result, or a refusal the client can
act on (try the leader, try again). Pure like the core: the host feeds it
requests and Ready batches and delivers what it replies.
"""

from __future__ import annotations

import bisect
import collections
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from .core.messages import Entry, Snapshot
from .protocol import (ClientReply, ClientRequest, Command, KvOp, KvSnapshot, Outcome, Record,
                       RecordOp, Status, StoreOp)
from .raft import NotLeader, RaftNode, Ready, Role
from .records import (InvalidRecord, SignedState, accept_signed, checked_op, decide_change,
                      replayed)

WRITE_KINDS = frozenset({"put", "append", "cas", "delete", "record_set", "record_delete",
                         "record_expire"})
READ_KINDS = frozenset({"get", "record_get", "record_list"})
WATCH_KIND = "record_changes"
CHANGELOG_LENGTH = 10_000
FULL_PAGE = 2_000
"""Records per page of a full listing: small enough that one answer is
encoded, routed and taken well inside a front end's watch timeout."""
WATCH_HOLD_TICKS = 20
"""A watch with nothing new is answered empty after this many ticks, well
inside a clerk's request timeout, so the clerk does not go elsewhere."""


class Codec(Protocol):
    """Bytes for the store's log entries and snapshots. The host passes
    :mod:`mydns_lab.codec`, so that this module stays pure. ``decode``
    raises ValueError on bytes that are not a message it knows."""

    def encode(self, message: Any) -> bytes: ...

    def decode(self, data: bytes) -> Any: ...


@dataclass(frozen=True, slots=True)
class Result:
    """What an operation gave: ``status`` is a :class:`Status` (one of
    :data:`~mydns_lab.protocol.REFUSALS` when refused); ``value`` is a KV
    answer or, when refused, the reason in words for people; the other
    fields are :class:`~mydns_lab.protocol.ClientReply`'s."""

    status: str
    value: str = ""
    records: tuple[Record, ...] = ()
    outcome: str = Outcome.NONE
    serial: int = 0
    full: bool = False
    more: bool = False


class KVStateMachine:
    def __init__(self, codec: Codec) -> None:
        self._codec = codec
        self.data: dict[str, str] = {}
        self.records: dict[str, Record] = {}
        self.serial = 0  # bumped by every record change: the zone's SOA serial
        self.sessions: dict[int, tuple[int, Result]] = {}
        # Per TSIG key name: the latest Time Signed accepted, and for each
        # message (its MAC) accepted at that time the last part applied.
        # Replicated and in snapshots: the authority on replays.
        self.signed: dict[str, SignedState] = {}
        self.applied_index = 0
        # Recent record changes, (serial, name), for watches. Derived, not
        # replicated: a replica restored from a snapshot starts it empty and
        # answers older watches with the full list.
        self.changes: collections.deque[tuple[int, str]] = collections.deque(
            maxlen=CHANGELOG_LENGTH)
        self._names: list[str] = []   # the record names sorted, as of serial _names_at
        self._names_at = -1

    def apply(self, index: int, cmd: Command) -> tuple[Result, bool]:
        """Apply the command at log ``index``; returns its result and
        whether it took effect now (False: a duplicate of an earlier one)."""
        self.applied_index = index
        last = self.sessions.get(cmd.client_id)
        if last is not None and cmd.seq <= last[0]:
            cached = last[1] if cmd.seq == last[0] else Result(Status.OK)
            return cached, False
        if isinstance(cmd.op, RecordOp):
            result = self._execute_record(cmd.op, cmd.time_ms, cmd.checked)
        else:
            result = self._execute(cmd.op)
        self.sessions[cmd.client_id] = (cmd.seq, result)
        return result, True

    def skip(self, index: int) -> None:
        """An entry with no command (a leader's no-op) was applied."""
        self.applied_index = index

    def read(self, key: str) -> str:
        return self.data.get(key, "")

    def query(self, op: StoreOp) -> Result:
        """Answer a read operation from the current state."""
        if isinstance(op, KvOp):
            return Result(Status.OK, self.read(op.key))
        if op.kind == "record_list":
            return Result(Status.OK, records=tuple(self.records.values()), serial=self.serial)
        if op.kind == "record_changes":
            return self.changes_since(op.since, op.name)
        try:
            name = checked_op(op).name
        except InvalidRecord as exc:
            return Result(Status.ERROR, str(exc))
        found = self.records.get(name)
        return Result(Status.OK, records=(found,) if found else (), serial=self.serial)

    def changes_since(self, serial: int, after: str = "") -> Result:
        """What changed after ``serial``: the changed records (a deleted
        name as a record with no owner), or, when the log of changes does
        not reach back that far, every record with ``full`` set; ``serial``
        of the result is where the next watch resumes.

        A full answer comes in pages of at most :data:`FULL_PAGE` records
        in name order, ``more`` set while pages follow: ``after`` (the last
        name of the page before) asks for the next one. The pages are taken
        at the serials they were asked at; a watcher that then asks for the
        changes since the first page's serial has every record."""
        if after:
            return self._full_page(after)
        if serial == self.serial:
            return Result(Status.OK, serial=self.serial)
        if serial > self.serial or not self.changes or self.changes[0][0] > serial + 1:
            return self._full_page("")
        recent: list[str] = []
        for at, name in reversed(self.changes):  # newest first: stop at the old ones
            if at <= serial:
                break
            recent.append(name)
        names = dict.fromkeys(reversed(recent))  # oldest change first, each name once
        changed = tuple(self.records.get(name) or Record(name) for name in names)
        return Result(Status.OK, records=changed, serial=self.serial)

    def _full_page(self, after: str) -> Result:
        """The page of every record that starts after the name ``after``."""
        if self._names_at != self.serial:  # sort once per serial, not per page
            self._names, self._names_at = sorted(self.records), self.serial
        start = bisect.bisect_right(self._names, after) if after else 0
        names = self._names[start:start + FULL_PAGE]
        return Result(Status.OK, records=tuple(self.records[n] for n in names),
                      serial=self.serial, full=True,
                      more=start + len(names) < len(self._names))

    def cached_result(self, client_id: int, seq: int) -> Result | None:
        """The result of ``(client_id, seq)`` if it is the last one applied."""
        last = self.sessions.get(client_id)
        if last is not None and last[0] == seq:
            return last[1]
        return None

    def snapshot(self) -> bytes:
        items = tuple(sorted(self.data.items()))
        records = tuple(self.records[name] for name in sorted(self.records))
        ordered = sorted(self.sessions.items())
        sessions = tuple((c, s, r.status, r.value) for c, (s, r) in ordered)
        outcomes = tuple(r.outcome for _, (_, r) in ordered)
        signed = tuple((key, time_s, mac, part)
                       for key, (time_s, parts) in sorted(self.signed.items())
                       for mac, part in sorted(parts.items()))
        return self._codec.encode(KvSnapshot(items, records, sessions, self.serial, outcomes,
                                             signed))

    def restore(self, snapshot: Snapshot) -> None:
        self.data, self.records, self.sessions, self.serial = {}, {}, {}, 0
        self.signed = {}
        self.changes.clear()
        self.applied_index = snapshot.index
        if not snapshot.data:
            return
        state = self._codec.decode(snapshot.data)
        if not isinstance(state, KvSnapshot):
            raise ValueError(f"snapshot at {snapshot.index} is not a record store snapshot")
        self.data = dict(state.items)
        self.records = {r.name: r for r in state.records}
        self.serial = state.serial
        outcomes = state.outcomes or (Outcome.NONE,) * len(state.sessions)
        self.sessions = {c: (s, Result(st, v, outcome=o))
                         for (c, s, st, v), o in zip(state.sessions, outcomes, strict=True)}
        for key, time_s, mac, part in state.signed:
            self.signed[key] = time_s, {**self.signed.get(key, (time_s, {}))[1], mac: part}

    def _execute(self, op: KvOp) -> Result:
        current = self.data.get(op.key, "")
        match op.kind:
            case "put":
                self.data[op.key] = op.value
            case "append":
                self.data[op.key] = current + op.value
            case "cas":
                if current != op.expected:
                    return Result(Status.OK, "false")
                self.data[op.key] = op.value
                return Result(Status.OK, "true")
            case "delete":
                self.data.pop(op.key, None)
            case _:
                return Result(Status.ERROR, f"unknown operation {op.kind!r}")
        return Result(Status.OK)

    def _execute_record(self, op: RecordOp, time_ms: int, checked: bool = False) -> Result:
        """Record changes check ownership and order in the same step as
        they write, so no interleaving can slip an older upload in; the
        rules are :func:`mydns_lab.records.decide_change`, shared with the
        etcd store. ``checked``: ``op`` is already in stored form."""
        if not checked:
            try:
                op = checked_op(op)
            except InvalidRecord as exc:
                return Result(Status.ERROR, str(exc))
        if op.tsig_key and op.kind in ("record_set", "record_delete"):
            signed = accept_signed(self.signed.get(op.tsig_key), op)
            if signed is None:
                change = replayed(op)
                return Result(change.status, change.reason)
            self.signed[op.tsig_key] = signed
        change = decide_change(op, self.records.get(op.name), len(self.records), time_ms)
        if change.stored is not None:
            self._store(change.stored)
        elif change.removed:
            del self.records[op.name]
            self._changed(op.name)
        return Result(change.status, change.reason, outcome=change.outcome)

    def _store(self, record: Record) -> None:
        self.records[record.name] = record
        self._changed(record.name)

    def _changed(self, name: str) -> None:
        """Every record change bumps the serial and is logged for watches."""
        self.serial += 1
        self.changes.append((self.serial, name))


ApplyObserver = Callable[[Entry, Command | None, Result | None, bool], None]
"""Sees every applied entry: (entry, command or None for a no-op, result,
took effect now). The simulator checks its invariants with it."""


class KVServer:
    def __init__(self, node: RaftNode, snapshot: Snapshot,
                 reply: Callable[[ClientReply], None],
                 max_raft_state: int | None = None,
                 observer: ApplyObserver | None = None, *, codec: Codec) -> None:
        """``snapshot`` is the node's durable snapshot, restored at start;
        ``max_raft_state`` (bytes) triggers compaction, None never;
        ``codec`` turns commands and snapshots into bytes."""
        self.node = node
        self._codec = codec
        self.machine = KVStateMachine(codec)
        self.machine.restore(snapshot)
        self._reply = reply
        self._max_raft_state = max_raft_state
        self._observer = observer
        # index -> (term, request, the command proposed for it)
        self._proposals: dict[int, tuple[int, ClientRequest, Command]] = {}
        self._reads: dict[int, ClientRequest] = {}                   # ctx -> request
        self._confirmed_reads: list[tuple[int, ClientRequest]] = []  # (read index, request)
        self._watches: list[tuple[int, ClientRequest]] = []           # (expiry tick, request)
        self._ticks = 0
        self._next_ctx = 1
        # Set by the host to why its disk cannot take writes ("": it can).
        # New writes are then refused with NO_SPACE and the log is not
        # compacted; reads and watches go on.
        self.disk_full = ""

    # --- requests -------------------------------------------------------------

    def submit(self, req: ClientRequest, time_ms: int = 0) -> None:
        """Take a client request; its answer goes to ``reply`` now or later.

        ``time_ms`` is the host's wall clock, stamped into writes.
        """
        try:
            if req.op.kind == WATCH_KIND:
                self._watch(req)
            elif req.op.kind in READ_KINDS:
                ctx = self._next_ctx
                self._next_ctx += 1
                self.node.read_index(ctx)
                self._reads[ctx] = req
            elif req.op.kind in WRITE_KINDS:
                cached = self.machine.cached_result(req.client_id, req.seq)
                if cached is not None:
                    self._answer(req, cached)
                    return
                if self.disk_full and self.node.role is Role.LEADER:
                    self._answer(req, Result(Status.NO_SPACE, self.disk_full))
                    return
                op = req.op
                checked = isinstance(op, RecordOp)
                if checked:
                    # Checked once here rather than by every replica at
                    # apply (a third of a follower's CPU): the check is a
                    # pure function of the op, so its refusal is the same
                    # answer apply would give, and nothing enters the log.
                    try:
                        op = checked_op(op)
                    except InvalidRecord as exc:
                        self._answer(req, Result(Status.ERROR, str(exc)))
                        return
                cmd = Command(req.client_id, req.seq, op, time_ms, checked)
                index, term = self.node.propose(self._codec.encode(cmd))
                self._proposals[index] = (term, req, cmd)
            else:
                self._answer(req, Result(Status.ERROR, f"unknown operation {req.op.kind!r}"))
        except NotLeader as exc:
            self._answer(req, Result(Status.NOT_LEADER), exc.leader_hint)

    # --- the apply step of a Ready ---------------------------------------------------

    def apply(self, rd: Ready) -> None:
        """The ``apply`` callback of :func:`mydns_lab.host.handle_ready`."""
        if rd.install_snapshot and rd.snapshot is not None:
            self._install(rd.snapshot)
        for entry in rd.committed_entries:
            self._apply_entry(entry)
        for state in rd.read_states:
            req = self._reads.pop(state.ctx, None)
            if req is not None:
                self._confirmed_reads.append((state.index, req))
        self._serve_reads()
        if rd.soft_state is not None and rd.soft_state.role is not Role.LEADER:
            self._fail_pending(rd.soft_state.leader)

    def tick(self) -> None:
        """Called by the host with every node tick: answers the watches held
        for a change (at most once a tick, however many changes there were:
        under load that batches many changes into one answer) and expires
        the ones held too long. Nothing is answered while this leader's
        applied state may lag the cluster's (see :meth:`_state_is_current`)."""
        self._ticks += 1
        if not self._state_is_current():
            return
        self._answer_watches()
        if self._watches and self._watches[0][0] <= self._ticks:
            due = [req for expiry, req in self._watches if expiry <= self._ticks]
            self._watches = [(e, r) for e, r in self._watches if e > self._ticks]
            for req in due:
                self._answer(req, self.machine.query(req.op))

    def maybe_compact(self, raft_state_bytes: int) -> bool:
        """Snapshot when the persisted Raft state has outgrown the limit
        (not while the disk is full: a snapshot is the largest write)."""
        if self._max_raft_state is None or raft_state_bytes <= self._max_raft_state:
            return False
        if self.disk_full:
            return False
        if self.machine.applied_index <= self.node.log.snapshot.index:
            return False
        self.node.compact(self.machine.applied_index, self.machine.snapshot())
        return True

    # --- internals --------------------------------------------------------------------

    def _state_is_current(self) -> bool:
        """Whether the applied state holds every committed change: an entry
        of this leader's term has committed (before that its commit index may
        lag the cluster's, Raft §8) and everything committed is applied. A
        watch answered earlier would hand a front end a copy missing
        acknowledged records: after a restart, DNS would deny names that
        exist (NXDOMAIN, cached by resolvers)."""
        log = self.node.log
        return (log.term_at(log.committed) == self.node.term
                and self.machine.applied_index >= log.committed)

    def _watch(self, req: ClientRequest) -> None:
        """A front end keeping its copy of the records current. Answered by
        the leader from applied state (not a linearizable read: a copy for
        DNS answers) at the next tick if something changed since the serial
        it names, else at the first tick after something does, or empty when
        the hold time passes. Answering on ticks batches changes under load."""
        if self.node.role is not Role.LEADER:
            raise NotLeader(self.node.leader)
        self._watches.append((self._ticks + WATCH_HOLD_TICKS, req))

    def _answer_watches(self) -> None:
        """Answer every held watch that has something: changes after its
        serial, or the next page of a full listing."""
        serial = self.machine.serial
        if any(_due(req, serial) for _, req in self._watches):
            waiting = self._watches
            self._watches = [(e, r) for e, r in waiting if not _due(r, serial)]
            # Front ends mostly wait at the same serial: collect those changes once.
            answers: dict[tuple[int, str], Result] = {}
            for _, req in waiting:
                if _due(req, serial):
                    key = _watch_key(req)
                    if key not in answers:
                        answers[key] = self.machine.query(req.op)
                    self._answer(req, answers[key])

    def _install(self, snapshot: Snapshot) -> None:
        self.machine.restore(snapshot)
        # Proposals the snapshot covers: their results are in its sessions.
        for index in [i for i in self._proposals if i <= snapshot.index]:
            _, req, _ = self._proposals.pop(index)
            cached = self.machine.cached_result(req.client_id, req.seq)
            self._answer(req, cached or Result(Status.RETRY))

    def _apply_entry(self, entry: Entry) -> None:
        cmd: Command | None = None
        result: Result | None = None
        effective = False
        pending = self._proposals.pop(entry.index, None)
        ours = pending is not None and pending[0] == entry.term
        if entry.data:
            # An entry this node proposed (same index and term: the same
            # entry, by Log Matching) applies the command it encoded rather
            # than decoding it again (a tenth of a leader's CPU under load).
            cmd = pending[2] if ours else self._codec.decode(entry.data)  # type: ignore[index]
            result, effective = self.machine.apply(entry.index, cmd)
        else:
            self.machine.skip(entry.index)
        if self._observer is not None:
            self._observer(entry, cmd, result, effective)
        if pending is None:
            return
        term, req, _ = pending
        if ours and result is not None:
            self._answer(req, result)
        else:
            # Another leader's entry took this index: ours was lost.
            self._answer(req, Result(Status.RETRY), self.node.leader)

    def _serve_reads(self) -> None:
        applied = self.machine.applied_index
        waiting = []
        for index, req in self._confirmed_reads:
            if index <= applied:
                self._answer(req, self.machine.query(req.op))
            else:
                waiting.append((index, req))
        self._confirmed_reads = waiting

    def _fail_pending(self, leader_hint: int) -> None:
        """Leadership is gone: nothing pending here can be answered, so let
        clients retry elsewhere now rather than time out."""
        for _, req, _ in self._proposals.values():
            self._answer(req, Result(Status.RETRY), leader_hint)
        for req in self._reads.values():
            self._answer(req, Result(Status.RETRY), leader_hint)
        for _, req in self._confirmed_reads + self._watches:
            self._answer(req, Result(Status.RETRY), leader_hint)
        self._proposals, self._reads, self._confirmed_reads, self._watches = {}, {}, [], []

    def _answer(self, req: ClientRequest, result: Result, leader_hint: int = 0) -> None:
        self._reply(ClientReply(req.dst, req.src, req.client_id, req.seq, result.status,
                                result.value, leader_hint, result.records, result.outcome,
                                result.serial, result.full, result.more))


def _watch_key(watch: ClientRequest) -> tuple[int, str]:
    """(the serial a held watch resumes from, the name a full listing
    continues after); watches are RecordOps."""
    assert isinstance(watch.op, RecordOp)
    return watch.op.since, watch.op.name


def _due(watch: ClientRequest, serial: int) -> bool:
    """A watch is answered once something changed after its serial, and at
    once when it asks for the next page of a full listing."""
    since, after = _watch_key(watch)
    return since != serial or bool(after)
