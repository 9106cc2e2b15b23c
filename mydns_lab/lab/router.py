"""The lab's network: the process every message between servers and clerks
passes through, unless the network is reliable and the two have a direct
pipe (:mod:`mydns_lab.net.transport`). Faults are injected here alone.

It routes envelopes by address, applies the fault layer
(:func:`mydns_lab.net.faults.message_fate`) under one seed, and counts every packet per link kind: ``raft`` (server to server),
``request`` (clerk to server) and ``reply`` (server to clerk). Status
reports addressed to the launcher (address 0) are forwarded untouched and
uncounted.

The launcher controls it through a control pipe: attach a new pipe for an
address (a restarted server: the pipe's descriptor arrives with
``multiprocessing.reduction.recv_handle``) and set the faults.
The router sends its counters to the launcher every quarter second.
"""

from __future__ import annotations

import dataclasses
import heapq
import random
import selectors
import signal
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing import reduction
from multiprocessing.connection import Connection

from ..codec import DecodeError, Envelope, pack_envelopes, unpack_envelopes
from ..net.faults import REPLY_TYPES, LinkFaults, message_fate
from ..net.procs import StopRequested, die_with_parent, set_role_title, stop_on_sigterm
from ..net.transport import LAUNCHER, FrameReader, FrameWriter, link_kind, watch_writable

STATS_INTERVAL_S = 0.25


@dataclass(slots=True)
class LinkCounters:
    sent: int = 0
    delivered: int = 0
    dropped: int = 0
    delayed: int = 0


@dataclass(slots=True)
class RouterStats:
    links: dict[str, LinkCounters] = field(default_factory=lambda: {
        "raft": LinkCounters(), "request": LinkCounters(), "reply": LinkCounters()})
    by_type: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"links": {k: dataclasses.asdict(v) for k, v in self.links.items()},
                "by_type": dict(self.by_type)}



# Control commands (launcher -> router), sent with Connection.send:
#   ("attach", address)         then a descriptor via reduction.send_handle
#   ("faults", LinkFaults)
#   ("report",)                 answered at once with ("final-stats", counters)
#   ("stop",)


class Router:
    def __init__(self, pipes: dict[int, Connection], control: Connection, seed: int,
                 server_ids: frozenset[int]) -> None:
        self._pipes: dict[int, Connection] = {}
        self._writers: dict[int, FrameWriter] = {}
        self._readers: dict[int, FrameReader] = {}
        self._watched: set[int] = set()  # pipes watched for writability (they hold frames back)
        self._control = control
        # One selector for the router's life, changed only when a pipe comes
        # or goes: building one per turn was a third of its CPU (perf doc).
        self._selector = selectors.DefaultSelector()
        self._selector.register(control, selectors.EVENT_READ, None)
        for address, conn in pipes.items():
            self._add_pipe(address, conn)
        self._rng = random.Random(f"router/{seed}")
        self._servers = server_ids
        self._faults = LinkFaults()
        self._heap: list[tuple[float, int, int, str, Envelope]] = []
        self._seq = 0
        self.stats = RouterStats()

    def run(self) -> None:
        next_stats = time.monotonic() + STATS_INTERVAL_S
        while True:
            timeout = STATS_INTERVAL_S
            if self._heap:
                timeout = max(0.0, min(timeout, self._heap[0][0] - time.monotonic()))
            outgoing: dict[int, list[tuple[str, Envelope]]] = {}
            self._watch_backlogs()
            for key, events in self._selector.select(timeout):
                if key.data is None:
                    if not self._handle_control():
                        return
                    continue
                if events & selectors.EVENT_WRITE:
                    self._write_backlog(key.data)
                if events & selectors.EVENT_READ:
                    self._receive(key.data, key.fileobj, outgoing)
            now = time.monotonic()
            while self._heap and self._heap[0][0] <= now:
                _, _, dst, link, envelope = heapq.heappop(self._heap)
                outgoing.setdefault(dst, []).append((link, envelope))
            self._deliver(outgoing)
            if now >= next_stats:
                next_stats = now + STATS_INTERVAL_S
                self._control.send(("stats", self.stats.as_dict()))

    # --- traffic ------------------------------------------------------------------------

    def _add_pipe(self, address: int, conn: Connection) -> None:
        self._drop_pipe(address)
        self._pipes[address] = conn
        self._writers[address] = FrameWriter(conn)
        self._readers[address] = FrameReader(conn)
        self._selector.register(conn, selectors.EVENT_READ, address)

    def close(self) -> None:
        """Close every process's pipe (what their writers hold back is
        dropped): for whoever drops a Router before its process exits."""
        for address in list(self._pipes):
            self._drop_pipe(address)

    def _drop_pipe(self, address: int) -> None:
        conn = self._pipes.pop(address, None)
        if conn is not None:
            self._selector.unregister(conn)
            self._watched.discard(address)
            self._readers.pop(address).close()
            self._writers.pop(address).close()

    def _watch_backlogs(self) -> None:
        """Watch for writability exactly the pipes that hold frames back: a
        process that stops reading must not stop the router, which carries
        everyone's messages (see FrameWriter)."""
        wanted = {a for a, writer in self._writers.items() if writer.backlogged}
        self._watched = watch_writable(self._selector, self._pipes, wanted, self._watched)

    def _write_backlog(self, address: int) -> None:
        try:
            self._writers[address].write_backlog()
        except OSError:
            self._drop_pipe(address)

    def _receive(self, src: int, conn: Connection,
                 outgoing: dict[int, list[tuple[str, Envelope]]]) -> None:
        if self._pipes.get(src) is not conn:
            return  # replaced by a newer pipe earlier in this same turn
        try:
            frames = self._readers[src].frames()
        except (EOFError, OSError):
            # The process died (a crash the launcher injected, or a real one).
            self._drop_pipe(src)
            return
        now = time.monotonic()
        for frame in frames:
            self._route(src, frame, now, outgoing)

    def _route(self, src: int, frame: bytes, now: float,
               outgoing: dict[int, list[tuple[str, Envelope]]]) -> None:
        """Count every message of ``frame`` and give each the fate the
        faults deal it: into ``outgoing`` now, later (the heap), or lost."""
        try:
            envelopes = unpack_envelopes(frame)
        except DecodeError:
            return  # not from one of ours; nothing to route
        for dst, kind, payload in envelopes:
            if dst == LAUNCHER:
                self._control.send(("status", payload))
                continue
            link = link_kind(self._servers, src, dst)
            counters = self.stats.links[link]
            counters.sent += 1
            self.stats.by_type[kind] = self.stats.by_type.get(kind, 0) + 1
            delays = message_fate(self._rng, self._faults, kind in REPLY_TYPES)
            if not delays:
                counters.dropped += 1
            envelope = (dst, kind, payload)
            for delay_ms in delays:
                if delay_ms <= 0:
                    outgoing.setdefault(dst, []).append((link, envelope))
                else:
                    counters.delayed += 1
                    self._seq += 1
                    heapq.heappush(self._heap, (now + delay_ms / 1000, self._seq, dst, link,
                                                envelope))

    def _deliver(self, outgoing: dict[int, list[tuple[str, Envelope]]]) -> None:
        for dst, items in outgoing.items():
            writer = self._writers.get(dst)
            written = False  # no pipe: its process is down
            if writer is not None:
                try:
                    # False: the process has stopped reading and its backlog is full.
                    written = writer.write(pack_envelopes([envelope for _, envelope in items]))
                except OSError:
                    self._drop_pipe(dst)
            for link, _ in items:
                counters = self.stats.links[link]
                if written:
                    counters.delivered += 1
                else:
                    counters.dropped += 1

    # --- control ------------------------------------------------------------------------

    def _handle_control(self) -> bool:
        try:
            command = self._control.recv()
        except (EOFError, OSError):
            return False  # the launcher is gone
        match command:
            case ("attach", address):
                self._add_pipe(address, Connection(reduction.recv_handle(self._control)))
            case ("faults", faults):
                self._faults = faults
            case ("report",):
                self._control.send(("final-stats", self.stats.as_dict()))
            case ("stop",):
                return False
        return True


def run_router(pipes: dict[int, Connection], control: Connection, seed: int,
               server_ids: frozenset[int]) -> None:
    """Process entry point."""
    die_with_parent()
    set_role_title("router")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop_on_sigterm()
    try:
        Router(pipes, control, seed, server_ids).run()
    except StopRequested:
        pass
    except Exception:
        # Tell the launcher why the network died before dying with it.
        control.send(("error", traceback.format_exc()))
        raise
