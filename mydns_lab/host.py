"""How every host handles a Ready batch: the one place that does it.

The simulator, the lab's server processes and (later) a real deployment all
call :func:`handle_ready`, so the order that keeps Raft safe lives here and
nowhere else.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from .core.messages import AppendEntries, Heartbeat, InstallSnapshot, RaftMessage
from .raft import RaftNode, Ready
from .raftkv import KVServer
from .storage.base import Storage

_PROMISE_FREE = (AppendEntries, Heartbeat, InstallSnapshot)


def _promises_nothing(msg: RaftMessage) -> bool:
    """Replication from a leader asks, it does not promise: the leader's own
    copy counts toward commit only once storage reports it durable
    (``log.stable``), and its term and vote were durable before it could be
    elected. So these may leave before the batch is persisted (Raft thesis
    §10.2.1), letting followers' disk writes overlap the leader's."""
    return isinstance(msg, _PROMISE_FREE)


def _nothing() -> None:
    pass


def _with_snapshot_bytes(msg: RaftMessage, storage: Storage) -> RaftMessage | None:
    """``msg``, an InstallSnapshot given the bytes the node no longer
    holds (see :mod:`mydns_lab.raft`) from storage; None when storage has
    moved on to a newer snapshot (the leader sends again after its snapshot
    timeout, naming that one)."""
    if not isinstance(msg, InstallSnapshot) or msg.snapshot.data or not msg.snapshot.index:
        return msg
    data = storage.snapshot_data(msg.snapshot.index)
    if data is None:
        return None
    return replace(msg, snapshot=replace(msg.snapshot, data=data))


def handle_ready(node: RaftNode, storage: Storage, send: Callable[[RaftMessage], None],
                 apply: Callable[[Ready], None],
                 flush: Callable[[], None] = _nothing) -> Ready | None:
    """Handle the node's next Ready, if any, and return it.

    Send what promises nothing -> ``flush`` -> persist -> send the rest ->
    apply -> advance. Persisting before the rest is what makes a vote or an
    acknowledgement binding: no such message leaves before the state it
    promises is durable. A host whose ``send`` only queues (the lab's
    servers write a turn's messages as one frame) passes ``flush`` to write
    the queue out before the fsync of new entries: otherwise the followers'
    disk writes would wait for the leader's instead of overlapping them.

    An InstallSnapshot leaves with the snapshot's bytes read from
    ``storage`` (the node keeps only its index and term).

    ``apply`` installs ``rd.snapshot`` when ``rd.install_snapshot`` is set,
    then applies ``rd.committed_entries`` in order, and may act on
    ``rd.read_states`` and ``rd.soft_state``.

    A node that lost its storage says in ``rd.soft_state`` when it has
    caught up; ``storage.end_recovery()`` then runs, before ``advance``.

    If ``storage.save`` raises, nothing more is sent or applied and the node
    must be discarded: its in-memory state is ahead of what is durable.
    """
    rd = node.ready()
    if rd is None:
        return None
    later = []
    for msg in rd.messages:
        if _promises_nothing(msg):
            # Filled before the save below, which may replace the snapshot it names.
            filled = _with_snapshot_bytes(msg, storage)
            if filled is not None:
                send(filled)
        else:
            later.append(msg)
    if rd.hard_state is not None or rd.entries or rd.snapshot is not None:
        if (rd.entries or rd.snapshot is not None) and len(later) < len(rd.messages):
            # Only new entries (or a snapshot) make the save slow enough to be
            # worth overlapping; when just the commit index moved, it writes
            # nothing, and flushing would put the commit notices ahead of the
            # clients' replies that apply is about to queue.
            flush()
        storage.save(rd.hard_state, rd.entries, rd.snapshot)
    for msg in later:
        send(msg)
    apply(rd)
    if storage.recovering and rd.soft_state is not None and not rd.soft_state.recovering:
        storage.end_recovery()  # caught up: it may vote again, after a crash too
    node.advance(rd)
    return rd


def drain(node: RaftNode, kv: KVServer, storage: Storage,
          send: Callable[[RaftMessage], None], apply: Callable[[Ready], None],
          flush: Callable[[], None] = _nothing) -> None:
    """What a host does after feeding a turn's messages and ticks: handle
    every waiting Ready (see :func:`handle_ready`), then let the record
    store compact the log if it outgrew its bound, and again until neither
    has work. The server process and the simulator both call this, once a
    turn, so a turn's writes are one ``save`` each and one compaction at most
    follows them."""
    while True:
        while handle_ready(node, storage, send, apply, flush) is not None:
            pass
        if not kv.maybe_compact(storage.size_bytes()):
            return
