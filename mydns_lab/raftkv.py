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

from dataclasses import dataclass
from typing import Callable

from .messages import (ClientReply, ClientRequest, Command, DecodeError, Entry, KvOp,
                       KvSnapshot, Snapshot, Status, decode, encode)
from .raft import NotLeader, RaftNode, Ready, Role

WRITE_KINDS = frozenset({"put", "append", "cas", "delete"})


@dataclass(frozen=True, slots=True)
class Result:
    status: str
    value: str = ""


class KVStateMachine:
    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.sessions: dict[int, tuple[int, Result]] = {}
        self.applied_index = 0

    def apply(self, index: int, cmd: Command) -> tuple[Result, bool]:
        """Apply the command at log ``index``; returns its result and
        whether it took effect now (False: a duplicate of an earlier one)."""
        self.applied_index = index
        last = self.sessions.get(cmd.client_id)
        if last is not None and cmd.seq <= last[0]:
            cached = last[1] if cmd.seq == last[0] else Result(Status.OK)
            return cached, False
        result = self._execute(cmd.op)
        self.sessions[cmd.client_id] = (cmd.seq, result)
        return result, True

    def skip(self, index: int) -> None:
        """An entry with no command (a leader's no-op) was applied."""
        self.applied_index = index

    def read(self, key: str) -> str:
        return self.data.get(key, "")

    def cached_result(self, client_id: int, seq: int) -> Result | None:
        """The result of ``(client_id, seq)`` if it is the last one applied."""
        last = self.sessions.get(client_id)
        if last is not None and last[0] == seq:
            return last[1]
        return None

    def snapshot(self) -> bytes:
        items = tuple(sorted(self.data.items()))
        sessions = tuple((c, s, r.status, r.value) for c, (s, r) in sorted(self.sessions.items()))
        return encode(KvSnapshot(items, sessions))

    def restore(self, snapshot: Snapshot) -> None:
        self.data, self.sessions = {}, {}
        self.applied_index = snapshot.index
        if not snapshot.data:
            return
        state = decode(snapshot.data)
        if not isinstance(state, KvSnapshot):
            raise DecodeError(f"snapshot at {snapshot.index} is not a record store snapshot")
        self.data = dict(state.items)
        self.sessions = {c: (s, Result(st, v)) for c, s, st, v in state.sessions}

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


ApplyObserver = Callable[[Entry, Command | None, Result | None, bool], None]
"""Sees every applied entry: (entry, command or None for a no-op, result,
took effect now). The simulator checks its invariants with it."""


class KVServer:
    def __init__(self, node: RaftNode, snapshot: Snapshot,
                 reply: Callable[[ClientReply], None],
                 max_raft_state: int | None = None,
                 observer: ApplyObserver | None = None) -> None:
        """``snapshot`` is the node's durable snapshot, restored at start;
        ``max_raft_state`` (bytes) triggers compaction, None never."""
        self.node = node
        self.machine = KVStateMachine()
        self.machine.restore(snapshot)
        self._reply = reply
        self._max_raft_state = max_raft_state
        self._observer = observer
        self._proposals: dict[int, tuple[int, ClientRequest]] = {}  # index -> (term, request)
        self._reads: dict[int, ClientRequest] = {}                   # ctx -> request
        self._confirmed_reads: list[tuple[int, ClientRequest]] = []  # (read index, request)
        self._next_ctx = 1

    # --- requests -------------------------------------------------------------

    def submit(self, req: ClientRequest, time_ms: int = 0) -> None:
        """Take a client request; its answer goes to ``reply`` now or later.

        ``time_ms`` is the host's wall clock, stamped into writes.
        """
        try:
            if req.op.kind == "get":
                ctx = self._next_ctx
                self._next_ctx += 1
                self.node.read_index(ctx)
                self._reads[ctx] = req
            elif req.op.kind in WRITE_KINDS:
                cached = self.machine.cached_result(req.client_id, req.seq)
                if cached is not None:
                    self._answer(req, cached)
                    return
                data = encode(Command(req.client_id, req.seq, req.op, time_ms))
                index, term = self.node.propose(data)
                self._proposals[index] = (term, req)
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

    def maybe_compact(self, raft_state_bytes: int) -> bool:
        """Snapshot when the persisted Raft state has outgrown the limit."""
        if self._max_raft_state is None or raft_state_bytes <= self._max_raft_state:
            return False
        if self.machine.applied_index <= self.node.log.snapshot.index:
            return False
        self.node.compact(self.machine.applied_index, self.machine.snapshot())
        return True

    # --- internals --------------------------------------------------------------------

    def _install(self, snapshot: Snapshot) -> None:
        self.machine.restore(snapshot)
        # Proposals the snapshot covers: their results are in its sessions.
        for index in [i for i in self._proposals if i <= snapshot.index]:
            _, req = self._proposals.pop(index)
            cached = self.machine.cached_result(req.client_id, req.seq)
            self._answer(req, cached or Result(Status.RETRY))

    def _apply_entry(self, entry: Entry) -> None:
        cmd: Command | None = None
        result: Result | None = None
        effective = False
        if entry.data:
            cmd = decode(entry.data)
            result, effective = self.machine.apply(entry.index, cmd)
        else:
            self.machine.skip(entry.index)
        if self._observer is not None:
            self._observer(entry, cmd, result, effective)
        pending = self._proposals.pop(entry.index, None)
        if pending is None:
            return
        term, req = pending
        if term == entry.term and result is not None:
            self._answer(req, result)
        else:
            # Another leader's entry took this index: ours was lost.
            self._answer(req, Result(Status.RETRY), self.node.leader)

    def _serve_reads(self) -> None:
        applied = self.machine.applied_index
        waiting = []
        for index, req in self._confirmed_reads:
            if index <= applied:
                self._answer(req, Result(Status.OK, self.machine.read(req.op.key)))
            else:
                waiting.append((index, req))
        self._confirmed_reads = waiting

    def _fail_pending(self, leader_hint: int) -> None:
        """Leadership is gone: nothing pending here can be answered, so let
        clients retry elsewhere now rather than time out."""
        for _, req in self._proposals.values():
            self._answer(req, Result(Status.RETRY), leader_hint)
        for req in self._reads.values():
            self._answer(req, Result(Status.RETRY), leader_hint)
        for _, req in self._confirmed_reads:
            self._answer(req, Result(Status.RETRY), leader_hint)
        self._proposals, self._reads, self._confirmed_reads = {}, {}, []

    def _answer(self, req: ClientRequest, result: Result, leader_hint: int = 0) -> None:
        self._reply(ClientReply(req.dst, req.src, req.client_id, req.seq, result.status,
                                result.value, leader_hint))
