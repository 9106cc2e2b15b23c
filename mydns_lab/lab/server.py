"""A Raft server process of the lab: the core, the record store and file
storage, hosted on a pipe to the router and the wall clock.

The loop, once per turn: wait for messages or the next tick; feed every
waiting message to the node (client requests to the record store); tick as
often as the clock says; handle every Ready through
:func:`mydns_lab.host.drain` (so a whole turn's worth of work is one
fsync); write everything sent as one frame. A status report goes to the
launcher a few times a second.
"""

from __future__ import annotations

import os
import random
import signal
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from .. import codec
from ..host import drain
from ..net.procs import die_with_parent
from ..reports import Event, ServerStatus
from ..net.transport import LAUNCHER, Outbox, receive
from ..protocol import ClientRequest
from ..raft import Config, RaftNode
from ..raftkv import KVServer
from ..storage.files import FileStorage

STATUS_INTERVAL_S = 0.25


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """How every server of a lab cluster runs."""

    peers: tuple[int, ...]
    data_dir: Path
    seed: int = 0
    tick_interval_s: float = 0.010
    election_ticks: int = 30
    heartbeat_ticks: int = 10
    fsync: bool = True
    max_raft_state: int | None = 1 << 20


def server_folder(data_dir: Path, node_id: int) -> Path:
    return data_dir / f"server-{node_id}"


class _Stop(Exception):
    pass


def _stop(_signum: int, _frame: object) -> None:
    raise _Stop()


def run_server(node_id: int, settings: ServerSettings, conn: Connection, incarnation: int) -> None:
    """Process entry point. Returns when told to stop or the router is gone."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the launcher decides when we stop
    signal.signal(signal.SIGTERM, _stop)
    storage = FileStorage(server_folder(settings.data_dir, node_id), fsync=settings.fsync)
    outbox = Outbox(conn)
    try:
        _serve(node_id, settings, storage, outbox, conn, incarnation)
    except (_Stop, EOFError, BrokenPipeError, ConnectionResetError):
        pass
    finally:
        storage.close()


def _serve(node_id: int, settings: ServerSettings, storage: FileStorage, outbox: Outbox,
           conn: Connection, incarnation: int) -> None:
    state = storage.load()
    config = Config(node_id, settings.peers, election_ticks=settings.election_ticks,
                    heartbeat_ticks=settings.heartbeat_ticks)

    def trace(line: str) -> None:
        outbox.send(LAUNCHER, Event(f"s{node_id}", line))

    def send(msg: object) -> None:
        outbox.send(msg.dst, msg)  # type: ignore[attr-defined]

    rng = random.Random(f"{settings.seed}/{node_id}/{incarnation}")
    node = RaftNode(config, state, rng, trace=trace, recovering=storage.recovering)
    kv = KVServer(node, state.snapshot, send, settings.max_raft_state, codec=codec)

    tick_s = settings.tick_interval_s
    next_tick = time.monotonic() + tick_s
    next_status = 0.0
    while True:
        conn.poll(max(0.0, next_tick - time.monotonic()))
        now_ms = int(time.time() * 1000)
        for msg in receive(conn, trace):
            if isinstance(msg, ClientRequest):
                kv.submit(msg, now_ms)
            else:
                node.step(msg)
        now = time.monotonic()
        if now >= next_tick:
            node.tick()
            kv.tick()
            # After a stall (a slow fsync, a paused process) catch up by at
            # most one tick rather than firing a burst of elections.
            next_tick = max(next_tick + tick_s, now)
        drain(node, kv, storage, send, kv.apply)
        if now >= next_status:
            next_status = now + STATUS_INTERVAL_S
            outbox.send(LAUNCHER, ServerStatus(
                node_id, os.getpid(), node.role.value, node.term, node.leader,
                node.log.committed, kv.machine.applied_index, node.log.last_index,
                node.log.snapshot.index, storage.size_bytes()))
        outbox.flush()
