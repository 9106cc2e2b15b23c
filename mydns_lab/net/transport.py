"""Pipes between the lab's processes: batched envelopes over a Connection.

Every process talks to the router through one duplex ``multiprocessing``
pipe. On a reliable network the launcher also gives each server a pipe
straight to every other server and to every front end: messages between
them skip the router, two process hops of four on a put's way through the
leader and a follower. A process collects what it sends during one turn of
its loop in an :class:`Outbox` and writes it as one frame per pipe, so a
Ready batch of twenty messages costs one write, not twenty.

Writes to a peer never block the writer (:class:`FrameWriter`): a peer that
stops reading (stopped, or stuck in a slow fsync) would otherwise stall the
leader writing to it, and with it the whole cluster. What its pipe cannot
take waits in a bounded backlog, then new frames to it are dropped, as the
unreliable network drops messages. Reads never block either
(:class:`FrameReader`): the part of a frame that has come waits for the
rest, so a writer stopped halfway through a frame stops nobody but itself.
"""

from __future__ import annotations

import os
import selectors
import socket
import struct
from collections import Counter, deque
from multiprocessing.connection import Connection
from typing import Any, Callable

from ..codec import DecodeError, Envelope, decode, encode, pack_envelopes, unpack_envelopes
from ..reports import DirectTraffic

LAUNCHER = 0
"""Address of the launcher: status reports go there, outside the fault layer."""


READ_BYTES = 256 << 10
"""What one read of a pipe asks for."""
READS_PER_TURN = 16
"""Reads of one pipe a turn at most, so one busy peer cannot keep a reader
from the others (what is left is read at the next turn)."""

MAX_BACKLOG_BYTES = 4 << 20
"""What a pipe may hold back for a peer that does not read before new
frames to it are dropped: seconds of a busy leader's traffic to one
follower. A frame once begun is always finished (a snapshot may be larger)."""


class FrameWriter:
    """The sending side of one pipe: frames as ``Connection.send_bytes``
    writes them (what ``recv_bytes`` reads), written without blocking.

    What the pipe cannot take now waits here, in order, and goes when
    :meth:`write_backlog` is called on a writable pipe (the caller watches
    for that while :attr:`backlogged`). Past MAX_BACKLOG_BYTES held back, a
    new frame is dropped whole. OSError from the pipe (its peer is gone)
    reaches the caller. The pipe's reads stay blocking: the writes are
    non-blocking per call (``MSG_DONTWAIT``), not by a flag on the pipe."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._sock = socket.socket(fileno=os.dup(conn.fileno()))
        self._backlog: deque[memoryview] = deque()
        self._backlog_bytes = 0

    @property
    def backlogged(self) -> bool:
        return bool(self._backlog)

    def write(self, payload: bytes) -> bool:
        """Send ``payload`` as one frame, now or later; False when it was
        dropped because the backlog is full."""
        if self._backlog_bytes >= MAX_BACKLOG_BYTES:
            return False
        size = len(payload)
        header = struct.pack("!i", size) if size <= 0x7FFFFFFF else struct.pack("!iQ", -1, size)
        frame = memoryview(header + payload)
        if not self._backlog:
            sent = self._send(frame)
            if sent == len(frame):
                return True
            frame = frame[sent:]
        self._backlog.append(frame)
        self._backlog_bytes += len(frame)
        return True

    def write_backlog(self) -> None:
        """Write as much of the backlog as the pipe takes now."""
        while self._backlog:
            chunk = self._backlog[0]
            sent = self._send(chunk)
            self._backlog_bytes -= sent
            if sent < len(chunk):
                self._backlog[0] = chunk[sent:]
                return
            self._backlog.popleft()

    def close(self) -> None:
        """Close the pipe (both directions) and drop what is held back."""
        self.detach()
        self._conn.close()

    def detach(self) -> None:
        """Stop writing: drop what is held back and close this writer's
        duplicate of the pipe, leaving the pipe itself to its owner (who
        still reads the EOF of a peer that is gone)."""
        self._backlog.clear()
        self._backlog_bytes = 0
        self._sock.close()

    def _send(self, data: memoryview) -> int:
        try:
            return self._sock.send(data, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return 0


class FrameReader:
    """The receiving side of one pipe: the frames :class:`FrameWriter` (or
    ``Connection.send_bytes``) wrote, read without blocking.

    ``Connection.recv_bytes`` waits for the whole of a frame it has begun,
    so a writer stopped in the middle of one (SIGSTOP, a pipe that was full)
    stopped its reader too: a follower so stuck behind a stopped leader
    could not even campaign. This reads what has come, a few hundred KB at
    a time, and keeps the tail of an unfinished frame for the next call.
    ``conn`` stays its owner's: this reads through a duplicate of it."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._sock = socket.socket(fileno=os.dup(conn.fileno()))
        self._buffer = bytearray()
        self._eof = False

    def fileno(self) -> int:
        return self.conn.fileno()

    def frames(self) -> list[bytes]:
        """Every whole frame that has come (perhaps none). Raises EOFError
        once the writer is gone and nothing whole is left, or when the
        stream holds no frame a writer could have written."""
        if self._eof:
            raise EOFError("pipe closed")
        for _ in range(READS_PER_TURN):
            try:
                chunk = self._sock.recv(READ_BYTES, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            if not chunk:
                self._eof = True
                break
            self._buffer += chunk
            if len(chunk) < READ_BYTES:
                break
        frames = self._split()
        if self._eof and not frames:
            raise EOFError("pipe closed")
        return frames

    def close(self) -> None:
        """Close the duplicate this reads through (not ``conn``)."""
        self._sock.close()

    def _split(self) -> list[bytes]:
        buffer, start, frames = self._buffer, 0, []
        with memoryview(buffer) as view:
            while len(buffer) - start >= 4:
                (size,) = struct.unpack_from("!i", buffer, start)
                header = 4
                if size == -1:  # a frame of 2 GiB or more: its size follows
                    if len(buffer) - start < 12:
                        break
                    (size,) = struct.unpack_from("!Q", buffer, start + 4)
                    header = 12
                elif size < 0:
                    raise EOFError(f"not a frame: size {size}")
                end = start + header + size
                if end > len(buffer):
                    break
                frames.append(view[start + header:end].tobytes())
                start = end
        del buffer[:start]
        return frames


def watch_writable(selector: selectors.BaseSelector, pipes: dict[int, Connection],
                   wanted: set[int], watched: set[int]) -> set[int]:
    """Register with ``selector`` (each pipe for reading, its peer as data)
    exactly the pipes of the peers in ``wanted`` for writability too, those
    in ``watched`` being the ones that were; returns the new ``watched``.
    Who writes with FrameWriters calls it before each select, with the
    peers whose writers hold frames back."""
    for peer in wanted ^ watched:
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if peer in wanted else 0)
        selector.modify(pipes[peer], events, peer)
    return wanted


def link_kind(servers: frozenset[int], src: int, dst: int) -> str:
    """What the router and the direct pipes count a message under: ``raft``
    (server to server), ``request`` (to a server) or ``reply``."""
    if src in servers and dst in servers:
        return "raft"
    return "request" if dst in servers else "reply"


class Outbox:
    """What a process sends during one turn, written as one frame per pipe.

    Everything goes to the router on ``conn``, except messages for a peer
    in ``direct`` (its pipe straight to that peer), which go there and are
    counted here as the router counts what it carries (:meth:`take_traffic`).
    A direct pipe whose peer is gone is dropped for good, and what was
    queued on it goes by the router, which knows whether the peer came back
    (a restarted server gets only a router pipe).
    """

    def __init__(self, conn: Connection, direct: dict[int, Connection] | None = None,
                 address: int = 0, servers: frozenset[int] = frozenset()) -> None:
        self._conn = conn
        self.direct: dict[int, Connection] = dict(direct or {})
        # A pipe whose write failed loses its writer (_lose_writer).
        self._writers = {peer: FrameWriter(pipe) for peer, pipe in self.direct.items()}
        self._address, self._servers = address, servers
        self._pending: list[Envelope] = []
        self._pending_direct: dict[int, list[Envelope]] = {}
        self._links: Counter[str] = Counter()
        self._by_type: Counter[str] = Counter()
        self._dropped: Counter[str] = Counter()

    def send(self, dst: int, msg: Any) -> None:
        envelope = (dst, type(msg).__name__, encode(msg))
        if dst in self.direct:
            self._pending_direct.setdefault(dst, []).append(envelope)
        else:
            self._pending.append(envelope)

    def flush(self) -> None:
        """Write everything queued, one frame per pipe, front ends' before
        servers'. Raises OSError (or EOFError) when the router is gone; a
        direct pipe that fails is dropped and its frame goes by the router."""
        if self._pending_direct:
            batches, self._pending_direct = self._pending_direct, {}
            # Clients' replies first: a front end is waiting on them, while a
            # server's batch may be a commit notice that waits on nothing,
            # and writing it wakes that server to compete for the CPU.
            for dst, batch in sorted(batches.items(), key=lambda item: item[0] in self._servers):
                written = self._write_direct(dst, batch)
                if written is None:
                    self._pending.extend(batch)
                elif written:
                    self._count(dst, batch)
                else:
                    self._dropped[link_kind(self._servers, self._address, dst)] += len(batch)
        if self._pending:
            batch, self._pending = self._pending, []
            self._conn.send_bytes(pack_envelopes(batch))

    def backlogged(self) -> list[int]:
        """The peers whose pipes hold frames back (watch them for writability)."""
        return [peer for peer, writer in self._writers.items() if writer.backlogged]

    def write_backlog(self, peer: int) -> None:
        """Write what the pipe to ``peer`` holds back, as far as it takes it."""
        writer = self._writers.get(peer)
        if writer is not None:
            try:
                writer.write_backlog()
            except OSError:
                self._lose_writer(peer)

    def drop_direct(self, peer: int) -> None:
        """Forget the direct pipe to ``peer`` (its process is gone)."""
        writer = self._writers.pop(peer, None)
        conn = self.direct.pop(peer, None)
        if writer is not None:
            writer.close()
        elif conn is not None:
            conn.close()

    def close(self) -> None:
        """Close every direct pipe (what they hold back is dropped); the
        router's pipe stays with its owner. A process that exits need not
        call it; whoever drops an Outbox before that (a test) does."""
        for peer in list(self.direct):
            self.drop_direct(peer)

    def report(self, status: Any) -> None:
        """Queue ``status`` for the launcher, and with it what went on the
        direct pipes since the last report (the router counts only its own)."""
        self.send(LAUNCHER, status)
        traffic = self.take_traffic()
        if traffic is not None:
            self.send(LAUNCHER, traffic)

    def take_traffic(self) -> DirectTraffic | None:
        """What went on direct pipes since the last call (None: nothing)."""
        if not self._links and not self._dropped:
            return None
        traffic = DirectTraffic(tuple(self._links.items()), tuple(self._by_type.items()),
                                tuple(self._dropped.items()))
        self._links, self._by_type, self._dropped = Counter(), Counter(), Counter()
        return traffic

    def _write_direct(self, dst: int, batch: list[Envelope]) -> bool | None:
        """True: written (or held back to be); False: dropped, the peer's
        backlog is full; None: no pipe to ``dst`` that works (use the router)."""
        writer = self._writers.get(dst)
        if writer is None:
            return None
        try:
            return writer.write(pack_envelopes(batch))
        except OSError:
            self._lose_writer(dst)
            return None

    def _lose_writer(self, peer: int) -> None:
        """A write to ``peer`` failed: its process is gone. The pipe stays in
        ``direct`` until its owner reads the EOF and calls drop_direct."""
        self._writers.pop(peer).detach()

    def _count(self, dst: int, batch: list[Envelope]) -> None:
        self._links[link_kind(self._servers, self._address, dst)] += len(batch)
        for _, kind, _ in batch:
            self._by_type[kind] += 1


class Inbox:
    """Waits on a process's router pipe and its direct pipes at once (one
    selector for the process's life) and reads what came."""

    def __init__(self, conn: Connection, outbox: Outbox) -> None:
        self._outbox = outbox
        self._selector = selectors.DefaultSelector()
        self._selector.register(conn, selectors.EVENT_READ, None)
        # By peer (None: the router). The outbox's direct pipes are the ones
        # registered: only this inbox drops them (on the EOF it reads).
        self._readers: dict[int | None, FrameReader] = {None: FrameReader(conn)}
        for peer, direct in outbox.direct.items():
            self._selector.register(direct, selectors.EVENT_READ, peer)
            self._readers[peer] = FrameReader(direct)
        self._watched: set[int] = set()  # peers whose pipes are watched for writability too

    def wait(self, timeout_s: float, on_error: Callable[[str], None] | None = None) -> list[Any]:
        """Every message that arrives within ``timeout_s`` (or at once, when
        some are waiting), writing the outbox's backlogs as their pipes take
        them meanwhile. Raises EOFError when the router is gone; a direct
        pipe that closes is dropped (its peer died)."""
        self._watch_backlogs()
        messages: list[Any] = []
        for key, events in self._selector.select(timeout_s):
            peer = key.data
            if peer is None:
                messages += receive(self._readers[None], on_error)
                continue
            if events & selectors.EVENT_WRITE:
                self._outbox.write_backlog(peer)
            if not events & selectors.EVENT_READ:
                continue
            try:
                messages += receive(self._readers[peer], on_error)
            except (EOFError, OSError):
                self._selector.unregister(key.fileobj)
                self._readers.pop(peer).close()
                self._watched.discard(peer)
                self._outbox.drop_direct(peer)
        return messages

    def close(self) -> None:
        """Close the duplicates the readers read through (the pipes stay
        their owners'). A process that exits need not call it."""
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()
        self._selector.close()

    def _watch_backlogs(self) -> None:
        self._watched = watch_writable(self._selector, self._outbox.direct,
                                       set(self._outbox.backlogged()), self._watched)


def receive(reader: FrameReader, on_error: Callable[[str], None] | None = None) -> list[Any]:
    """Decode every message that has come through ``reader``'s pipe,
    without blocking. Raises EOFError when the pipe's writer is gone.

    A frame or message that does not decode is skipped (and reported to
    ``on_error``): no input may stop a process.
    """
    messages = []
    for frame in reader.frames():
        try:
            envelopes = unpack_envelopes(frame)
        except DecodeError as exc:
            if on_error is not None:
                on_error(f"dropped an unreadable frame: {exc}")
            continue
        for _, _, payload in envelopes:
            try:
                messages.append(decode(payload))
            except DecodeError as exc:
                if on_error is not None:
                    on_error(f"dropped an unreadable message: {exc}")
    return messages
