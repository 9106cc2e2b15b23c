"""A front end's clerk pool (mydns_lab.net.cluster_client) after a leader
change: once one clerk hears the new leader answer, the others aim there
instead of each hunting through the servers one timeout at a time. In the
crash x unreliable matrix a front end's watch hunted that way for over a
second while its queries already reached the new leader, and the front
end's copy (DNS) lagged behind what JSON showed.

Replay: ``pytest tests/test_cluster_client.py``.
"""

from __future__ import annotations

import asyncio
import random
from multiprocessing import Pipe
from typing import Callable

from mydns_lab.clerks import Clerk, ClerkTiming
from mydns_lab.net.cluster_client import ClusterClient, ClusterTimeout
from mydns_lab.net.transport import FrameReader, Outbox, receive
from mydns_lab.protocol import ClientReply, ClientRequest, RecordOp, Status

SERVERS = (1, 2, 3)
ADDRESS = 100
TIMING = ClerkTiming(request_timeout_ms=150)


class _Aimed(random.Random):
    """A clerk's rng that makes it start at a chosen server."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self._index = index

    def randrange(self, *args, **kwargs) -> int:  # type: ignore[override]
        return self._index


def _clerk(client_id: int, first_server: int, send: Callable[[ClientRequest], None]) -> Clerk:
    return Clerk(client_id, SERVERS, _Aimed(SERVERS.index(first_server)), send, TIMING,
                 address=ADDRESS)


def test_a_clerk_told_of_the_leader_resends_there_not_to_the_next_server() -> None:
    sent: list[ClientRequest] = []
    clerk = _clerk(7, 1, sent.append)
    clerk.start(RecordOp("record_get", "laptop"), now_ms=0)
    clerk.follow_leader(3)
    clerk.on_timer(now_ms=TIMING.request_timeout_ms)
    assert [r.dst for r in sent] == [1, 3]


def test_following_the_leader_already_asked_changes_nothing() -> None:
    sent: list[ClientRequest] = []
    clerk = _clerk(7, 1, sent.append)
    clerk.start(RecordOp("record_get", "laptop"), now_ms=0)
    clerk.follow_leader(1)  # no news: a silent server is still given up on
    clerk.follow_leader(99)  # not a server: ignored
    clerk.on_timer(now_ms=TIMING.request_timeout_ms)
    assert [r.dst for r in sent] == [1, 2]


def test_the_pool_points_a_hunting_clerk_at_the_leader_another_clerk_found() -> None:
    """Server 1 is dead; 3 leads. One clerk asks 3 and is answered; the other,
    stuck on 1, must go to 3 next, not to 2 (which would cost a timeout)."""

    async def scenario() -> list[int]:
        ours, theirs = Pipe()
        client = ClusterClient(theirs, ADDRESS, SERVERS, TIMING)
        to_dead: list[ClientRequest] = []
        answer = Outbox(ours)
        sent_to_by_stuck: list[int] = []
        stuck_id, live_id = 11, 12
        # The pool's idle clerks, popped from the end: the stuck one first.
        client._idle = [_clerk(live_id, 3, client._send), _clerk(stuck_id, 1, client._send)]
        loop = asyncio.get_running_loop()

        requests = FrameReader(ours)

        def serve() -> None:
            for req in receive(requests):
                if req.client_id == stuck_id:
                    sent_to_by_stuck.append(req.dst)
                if req.dst == 3:
                    answer.send(ADDRESS, ClientReply(3, ADDRESS, req.client_id, req.seq,
                                                     Status.OK))
                    answer.flush()
                else:
                    to_dead.append(req)
        loop.add_reader(ours.fileno(), serve)
        try:
            stuck = asyncio.ensure_future(client.call(RecordOp("record_get", "a"), 5.0))
            await asyncio.sleep(0)  # the stuck clerk goes first, to server 1
            live = await client.call(RecordOp("record_get", "b"), 5.0)
            assert live.status == Status.OK
            assert (await asyncio.wait_for(stuck, 5.0)).status == Status.OK
        finally:
            loop.remove_reader(ours.fileno())
            requests.close()
            client._close()
        return sent_to_by_stuck

    assert asyncio.run(scenario()) == [1, 3]


def test_a_call_nobody_answers_times_out_and_frees_its_clerk() -> None:
    """Past its deadline a call raises ClusterTimeout, counts a timeout, and
    its clerk is idle again, not left busy with a timer still armed."""

    async def scenario() -> ClusterClient:
        ours, theirs = Pipe()
        client = ClusterClient(theirs, ADDRESS, SERVERS, TIMING)
        try:
            try:
                # The outer bound only keeps a broken deadline from hanging the test.
                await asyncio.wait_for(client.call(RecordOp("record_get", "a"), 0.05), 5.0)
            except ClusterTimeout as exc:
                assert "0.05 s" in str(exc)
            else:
                raise AssertionError("a call nobody answered returned")
        finally:
            client._close()
            ours.close()
        return client

    client = asyncio.run(scenario())
    assert client.counters.timeouts == 1
    assert (client.clerks_busy, client.clerks_idle) == (0, 1)

