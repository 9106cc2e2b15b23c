"""A Raft server process of the lab: the core, the record store and file
storage, hosted on a pipe to the router (and, on a reliable network, pipes
straight to its peers) and the wall clock.

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
from ..net.procs import StopRequested, die_with_parent, set_role_title, stop_on_sigterm
from ..net.transport import LAUNCHER, Inbox, Outbox
from ..protocol import ClientRequest
from ..raft import Config, RaftNode
from ..raftkv import KVServer
from ..reports import Event, ServerStatus
from ..storage.files import FileStorage, StorageError
from .diskspace import DiskAlarm, out_of_space

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


def run_server(node_id: int, settings: ServerSettings, conn: Connection, incarnation: int,
               direct: dict[int, Connection] | None = None) -> None:
    """Process entry point: ``conn`` to the router, ``direct`` to the peers
    reached without it. Returns when told to stop or the router is gone."""
    die_with_parent()
    set_role_title(f"server s{node_id}")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the launcher decides when we stop
    stop_on_sigterm()
    outbox = Outbox(conn, direct, node_id, frozenset(settings.peers))
    server = _Server(node_id, settings, outbox, incarnation)
    try:
        server.serve(Inbox(conn, outbox))
    except (StopRequested, EOFError, BrokenPipeError, ConnectionResetError):
        pass
    finally:
        server.storage.close()


class _Server:
    """One server's state across turns: its storage, node and record store,
    rebuilt from disk when a write finds the disk full."""

    def __init__(self, node_id: int, settings: ServerSettings, outbox: Outbox,
                 incarnation: int) -> None:
        self.node_id = node_id
        self.settings = settings
        self.outbox = outbox
        self.folder = server_folder(settings.data_dir, node_id)
        self.alarm = DiskAlarm(self.folder, len(settings.peers))
        self.rng = random.Random(f"{settings.seed}/{node_id}/{incarnation}")
        self.storage = FileStorage(self.folder, fsync=settings.fsync)
        self.node, self.kv = self._boot()

    def _boot(self) -> tuple[RaftNode, KVServer]:
        """A node and record store built from what storage holds."""
        settings = self.settings
        state = self.storage.load()
        config = Config(self.node_id, settings.peers, election_ticks=settings.election_ticks,
                        heartbeat_ticks=settings.heartbeat_ticks)
        node = RaftNode(config, state, self.rng, trace=self.trace,
                        recovering=self.storage.recovering)
        kv = KVServer(node, state.snapshot, self.send, settings.max_raft_state, codec=codec)
        kv.disk_full = self.alarm.reason
        return node, kv

    def trace(self, line: str) -> None:
        self.outbox.send(LAUNCHER, Event(f"s{self.node_id}", line))

    def send(self, msg: object) -> None:
        self.outbox.send(msg.dst, msg)  # type: ignore[attr-defined]

    def serve(self, inbox: Inbox) -> None:
        """The loop: messages in, ticks, every Ready out, status reports."""
        tick_s = self.settings.tick_interval_s
        next_tick = time.monotonic() + tick_s
        next_status = 0.0
        while True:
            messages = inbox.wait(max(0.0, next_tick - time.monotonic()), self.trace)
            now_ms = int(time.time() * 1000)
            for msg in messages:
                if isinstance(msg, ClientRequest):
                    self.kv.submit(msg, now_ms)
                else:
                    self.node.step(msg)
            now = time.monotonic()
            if now >= next_tick:
                self.node.tick()
                self.kv.tick()
                # After a stall (a slow fsync, a paused process) catch up by at
                # most one tick rather than firing a burst of elections.
                next_tick = max(next_tick + tick_s, now)
            self._drain()
            if now >= next_status:
                next_status = now + STATUS_INTERVAL_S
                self._check_disk()
                self.outbox.report(self._status())
            self.outbox.flush()

    def _drain(self) -> None:
        """:func:`drain`; a write that finds the disk full raises the alarm
        and rebuilds the node from what is durable, as a crash and restart
        would (its in-memory state is ahead of the disk), without dying."""
        try:
            drain(self.node, self.kv, self.storage, self.send, self.kv.apply, self.outbox.flush)
        except StorageError as exc:
            if not out_of_space(exc):
                raise
            self.alarm.raise_alarm("a write failed")
            self.trace(f"disk full: {exc}; writes refused until space is freed")
            self.storage.close()
            self.storage = FileStorage(self.folder, fsync=self.settings.fsync)
            self.node, self.kv = self._boot()

    def _check_disk(self) -> None:
        snapshot_bytes = self.storage.snapshot_size_bytes()
        if self.alarm.check(snapshot_bytes, self.settings.max_raft_state or 0):
            self.kv.disk_full = self.alarm.reason
            self.trace(self.alarm.reason or "disk has room again: writes accepted")

    def _status(self) -> ServerStatus:
        node, kv = self.node, self.kv
        return ServerStatus(self.node_id, os.getpid(), node.role.value, node.term, node.leader,
                            node.log.committed, kv.machine.applied_index, node.log.last_index,
                            node.log.snapshot.index, self.storage.size_bytes(), self.alarm.reason)
