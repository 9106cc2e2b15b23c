"""The lab's pipes (mydns_lab.net.transport): what goes on a direct pipe,
what goes by the router, how direct traffic is counted, and what happens
when a peer dies. The lab-level half (a reliable lab uses direct pipes, an
unreliable one none) is in tests/test_lab.py.

Replay: ``pytest tests/test_transport.py``.
"""

from __future__ import annotations

import signal
import threading
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from typing import Iterator

import pytest

from mydns_lab.codec import decode, unpack_envelopes
from mydns_lab.core.messages import Heartbeat, HeartbeatResponse
from mydns_lab.lab.state import LabState
from mydns_lab.lab.router import Router
from mydns_lab.net.transport import (MAX_BACKLOG_BYTES, FrameReader, FrameWriter, Inbox, Outbox,
                                     link_kind, receive)
from mydns_lab.protocol import ClientReply, Status
from mydns_lab.reports import DirectTraffic

SERVERS = frozenset({1, 2, 3})
CLERK = 101


def test_link_kinds() -> None:
    assert link_kind(SERVERS, 1, 2) == "raft"
    assert link_kind(SERVERS, CLERK, 2) == "request"
    assert link_kind(SERVERS, 2, CLERK) == "reply"


def test_messages_for_a_direct_peer_skip_the_router_and_are_counted() -> None:
    router_ours, router_theirs = Pipe()
    peer_ours, peer_theirs = Pipe()
    outbox = Outbox(router_theirs, {2: peer_theirs}, address=1, servers=SERVERS)
    outbox.send(2, Heartbeat(4, 1, 2, 0))
    outbox.send(3, Heartbeat(4, 1, 3, 0))
    outbox.send(CLERK, ClientReply(1, CLERK, 7, 1, Status.OK))
    outbox.flush()
    peer, router = FrameReader(peer_ours), FrameReader(router_ours)
    assert [m.dst for m in receive(peer)] == [2]
    assert [m.dst for m in receive(router)] == [3, CLERK]
    peer.close()
    router.close()
    traffic = outbox.take_traffic()
    assert traffic == DirectTraffic((("raft", 1),), (("Heartbeat", 1),))
    assert outbox.take_traffic() is None  # counted once
    outbox.close()
    assert outbox.direct == {} and peer_theirs.closed


def test_a_dead_peer_s_pipe_is_dropped_and_its_messages_go_by_the_router() -> None:
    router_ours, router_theirs = Pipe()
    peer_ours, peer_theirs = Pipe()
    outbox = Outbox(router_theirs, {2: peer_theirs}, address=1, servers=SERVERS)
    peer_ours.close()  # the peer's process died
    outbox.send(2, Heartbeat(4, 1, 2, 0))
    outbox.flush()
    router = FrameReader(router_ours)
    assert [m.dst for m in receive(router)] == [2]
    assert outbox.take_traffic() is None
    outbox.send(2, Heartbeat(5, 1, 2, 0))  # from now on straight to the router
    outbox.flush()
    assert [m.term for m in receive(router)] == [5]
    # The pipe itself goes when its owner reads the EOF (Inbox, ClusterClient).
    outbox.drop_direct(2)
    assert outbox.direct == {}
    router.close()


def test_the_inbox_reads_every_pipe_and_forgets_a_closed_direct_one() -> None:
    router_ours, router_theirs = Pipe()
    peer_ours, peer_theirs = Pipe()
    outbox = Outbox(router_ours, {2: peer_ours}, address=1, servers=SERVERS)
    inbox = Inbox(router_ours, outbox)
    for src, conn in ((3, router_theirs), (2, peer_theirs)):
        sender = Outbox(conn)
        sender.send(1, HeartbeatResponse(4, src, 1))
        sender.flush()
    got = inbox.wait(1.0)
    assert sorted(m.src for m in got) == [2, 3]
    peer_theirs.close()
    assert inbox.wait(1.0) == []
    assert outbox.direct == {}
    router_theirs.close()
    with pytest.raises(EOFError):
        inbox.wait(1.0)
    inbox.close()


def test_the_lab_state_adds_direct_traffic_to_the_router_s() -> None:
    state = LabState(nservers=3, nclerks=1)
    state.on_router_stats({"links": {"raft": {"sent": 10, "delivered": 8, "dropped": 2,
                                              "delayed": 0}},
                           "by_type": {"Heartbeat": 10}})
    state.on_report(DirectTraffic((("raft", 5), ("reply", 1)),
                                  (("Heartbeat", 5), ("ClientReply", 1))))
    state.on_report(DirectTraffic((("raft", 1),), (("Heartbeat", 1),), (("raft", 3),)))
    traffic = state.traffic()
    assert traffic["links"]["raft"] == {"sent": 19, "delivered": 14, "dropped": 5, "delayed": 0}
    assert traffic["links"]["reply"]["sent"] == 1
    assert traffic["by_type"] == {"Heartbeat": 16, "ClientReply": 1}
    assert state.packets()["sent"] == 20
    assert state.router["by_type"] == {"Heartbeat": 10}  # the router's own stay its own


# --- a peer that stops reading ------------------------------------------------------------

@pytest.fixture
def no_hang() -> Iterator[None]:
    """A write that blocks fails the test after 20 s instead of hanging it."""
    def hung(_signum: int, _frame: object) -> None:
        raise AssertionError("a write blocked on a pipe whose reader stopped")
    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_a_frame_writer_never_blocks_and_delivers_in_order(no_hang: None) -> None:
    ours, theirs = Pipe()
    writer = FrameWriter(ours)
    frames = [bytes([i % 251]) * (1000 + i) for i in range(10_000)]  # ~15 MB: many pipes full
    written = [frame for frame in frames if writer.write(frame)]
    assert writer.backlogged
    assert MAX_BACKLOG_BYTES <= sum(map(len, written)) < MAX_BACKLOG_BYTES + (1 << 20)
    assert not writer.write(b"x"), "past the bound a new frame is dropped"
    big = b"s" * (MAX_BACKLOG_BYTES + 12345)  # a frame once begun is finished, whatever its size
    got = _read_while_writing(writer, theirs, len(written))
    assert got == written and not writer.backlogged
    assert writer.write(big)
    assert _read_while_writing(writer, theirs, 1) == [big]
    writer.close()
    with pytest.raises(OSError):
        ours.fileno()


def _read_while_writing(writer: FrameWriter, conn: Connection, count: int) -> list[bytes]:
    """``count`` frames read from ``conn`` by a thread (a reader blocks until
    a frame is whole) while this one writes ``writer``'s backlog."""
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.extend(conn.recv_bytes() for _ in range(count)))
    reader.start()
    while writer.backlogged:
        writer.write_backlog()
    reader.join()
    return got


def test_a_stopped_peer_costs_its_own_messages_only(no_hang: None) -> None:
    """The outbox of a leader whose follower stopped reading: it goes on
    writing to the router, counts what it dropped for that follower, and
    its inbox writes the held-back frames once the follower reads again."""
    router_ours, router_theirs = Pipe()
    peer_ours, peer_theirs = Pipe()
    outbox = Outbox(router_ours, {2: peer_ours}, address=1, servers=SERVERS)
    inbox = Inbox(router_ours, outbox)
    payload = "x" * 50_000
    router = FrameReader(router_theirs)
    for term in range(1, 200):  # ~10 MB for the stopped follower
        outbox.send(2, ClientReply(1, 2, 7, term, Status.OK, payload))
        outbox.send(3, Heartbeat(term, 1, 3, 0))
        outbox.flush()
        assert [m.term for m in receive(router)] == [term]
    traffic = outbox.take_traffic()
    assert traffic is not None and traffic.dropped and traffic.dropped[0][0] == "raft"
    sent = dict(traffic.links)["raft"]
    assert sent + traffic.dropped[0][1] == 199 and outbox.backlogged() == [2]
    frames: list[bytes] = []  # one a turn; a thread reads them (a reader waits for whole frames)
    reader = threading.Thread(target=lambda: frames.extend(peer_theirs.recv_bytes()
                                                           for _ in range(sent)))
    reader.start()
    while outbox.backlogged():
        inbox.wait(0.01)  # writes the backlog as the pipe takes it
    reader.join()
    seqs = [decode(payload).seq for frame in frames for _, _, payload in unpack_envelopes(frame)]
    assert seqs == list(range(1, sent + 1))
    outbox.close()
    inbox.close()
    router.close()


def test_the_router_goes_on_when_a_process_stops_reading(no_hang: None) -> None:
    control_ours, control_theirs = Pipe()
    sender_ours, sender_theirs = Pipe()
    stopped_ours, stopped_theirs = Pipe()
    awake_ours, awake_theirs = Pipe()
    router = Router({1: sender_theirs, CLERK: stopped_theirs, 3: awake_theirs}, control_theirs,
                    seed=1, server_ids=SERVERS)
    payload = "x" * 50_000
    awake = FrameReader(awake_ours)
    for term in range(1, 200):
        outgoing: dict = {}
        sender = Outbox(sender_ours, address=1, servers=SERVERS)
        sender.send(CLERK, ClientReply(1, CLERK, 7, term, Status.OK, payload))
        sender.send(3, Heartbeat(term, 1, 3, 0))
        sender.flush()
        router._receive(1, sender_theirs, outgoing)
        router._deliver(outgoing)
        assert [m.term for m in receive(awake)] == [term]
    raft, reply = router.stats.links["raft"], router.stats.links["reply"]
    assert raft.delivered == 199 and raft.dropped == 0  # to the server that reads
    assert reply.dropped > 0 and reply.delivered + reply.dropped == 199  # to the stopped one
    router.close()
    awake.close()


def test_a_reader_never_blocks_on_a_frame_its_writer_stopped_in(no_hang: None) -> None:
    """A writer stopped halfway through a frame (SIGSTOP, a full pipe) once
    stopped its reader in recv_bytes; the reader keeps the half for later,
    takes several frames at a read, and says EOF only when nothing whole is
    left."""
    ours, theirs = Pipe()
    outbox = Outbox(ours)
    outbox.send(1, Heartbeat(1, 2, 1, 0))
    outbox.flush()
    outbox.send(1, Heartbeat(2, 2, 1, 0))
    outbox.flush()
    whole = FrameReader(theirs)
    assert [m.term for m in receive(whole)] == [1, 2]
    big = ClientReply(1, 2, 7, 3, Status.OK, "x" * 100_000)  # within what the pipe holds
    frame = FrameWriter(ours)
    payload = outbox_frame(big)
    raw = len(payload).to_bytes(4, "big") + payload
    frame._sock.sendall(raw[:1000])  # stopped here
    assert receive(whole) == []
    frame._sock.sendall(raw[1000:])
    assert [m.seq for m in receive(whole)] == [3]
    frame._sock.sendall(raw[:10])  # the writer dies mid-frame
    frame.close()
    assert receive(whole) == []  # nothing whole yet: the EOF shows as such next
    with pytest.raises(EOFError):
        receive(whole)
    whole.close()


def outbox_frame(message: object) -> bytes:
    """What an Outbox writes for ``message`` alone, without its length."""
    from mydns_lab.codec import encode, pack_envelopes
    return pack_envelopes([(1, type(message).__name__, encode(message))])
