"""The lab's pipes (mydns_lab.net.transport): what goes on a direct pipe,
what goes by the router, how direct traffic is counted, and what happens
when a peer dies. The lab-level half (a reliable lab uses direct pipes, an
unreliable one none) is in tests/test_lab.py.

Replay: ``pytest tests/test_transport.py``.
"""

from __future__ import annotations

from multiprocessing import Pipe

import pytest

from mydns_lab.core.messages import Heartbeat, HeartbeatResponse
from mydns_lab.lab.state import LabState
from mydns_lab.net.transport import Inbox, Outbox, link_kind, receive
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
    assert [m.dst for m in receive(peer_ours)] == [2]
    assert [m.dst for m in receive(router_ours)] == [3, CLERK]
    traffic = outbox.take_traffic()
    assert traffic == DirectTraffic((("raft", 1),), (("Heartbeat", 1),))
    assert outbox.take_traffic() is None  # counted once


def test_a_dead_peer_s_pipe_is_dropped_and_its_messages_go_by_the_router() -> None:
    router_ours, router_theirs = Pipe()
    peer_ours, peer_theirs = Pipe()
    outbox = Outbox(router_theirs, {2: peer_theirs}, address=1, servers=SERVERS)
    peer_ours.close()  # the peer's process died
    outbox.send(2, Heartbeat(4, 1, 2, 0))
    outbox.flush()
    assert [m.dst for m in receive(router_ours)] == [2]
    assert outbox.direct == {} and outbox.take_traffic() is None
    outbox.send(2, Heartbeat(5, 1, 2, 0))  # from now on straight to the router
    outbox.flush()
    assert [m.term for m in receive(router_ours)] == [5]


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


def test_the_lab_state_adds_direct_traffic_to_the_router_s() -> None:
    state = LabState(nservers=3, nclerks=1)
    state.on_router_stats({"links": {"raft": {"sent": 10, "delivered": 8, "dropped": 2,
                                              "delayed": 0}},
                           "by_type": {"Heartbeat": 10}})
    state.on_report(DirectTraffic((("raft", 5), ("reply", 1)),
                                  (("Heartbeat", 5), ("ClientReply", 1))))
    state.on_report(DirectTraffic((("raft", 1),), (("Heartbeat", 1),)))
    traffic = state.traffic()
    assert traffic["links"]["raft"] == {"sent": 16, "delivered": 14, "dropped": 2, "delayed": 0}
    assert traffic["links"]["reply"]["sent"] == 1
    assert traffic["by_type"] == {"Heartbeat": 16, "ClientReply": 1}
    assert state.packets()["sent"] == 17
    assert state.router["by_type"] == {"Heartbeat": 10}  # the router's own stay its own
