"""A process that stops reading (SIGSTOP here; a slow disk or a swapped-out
process does the same) must not stop the others: writes go on through the
leader and the other follower, and the stopped follower catches up once it
runs again.

Before the pipes' writes were made non-blocking, a leader writing to a
stopped follower blocked once the pipe was full, and with it every write of
the cluster (0 puts/s until the follower ran again); on an unreliable
network the router blocked the same way. The router's half is tested on
its own in tests/test_transport.py.

Replay: ``pytest tests/test_stalled_peer.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest

from mydns_lab.clients.jsonclient import AsyncJsonClient
from mydns_lab.experiments.labprocess import LabProcess, wait_for

CLIENTS = 32
PUTS = 3_000
"""Enough traffic to the stopped follower to fill its pipe many times over
(it did so within a second of SIGSTOP before the fix)."""
DEADLINE_S = 40.0


async def put_many(servers: list[tuple[str, int]], count: int, deadline_s: float) -> int:
    """``count`` acknowledged puts by CLIENTS clients, each on its own name;
    returns how many were acknowledged before ``deadline_s`` passed."""
    acked = 0
    deadline = time.monotonic() + deadline_s

    async def client(index: int) -> None:
        nonlocal acked
        conn = await AsyncJsonClient(servers[index % len(servers)]).open()
        try:
            seq = 0
            while acked < count and time.monotonic() < deadline:
                seq += 1
                reply = await conn.call({"Type": "Put", "Key": f"stall{index}", "Seq": seq,
                                         "Value": f"10.9.{seq >> 8 & 255}.{seq & 255}",
                                         "Token": f"stall-token-{index}"}, 2.0)
                if reply is not None and reply.get("Type") == "PutOk":
                    acked += 1
        finally:
            conn.close()

    await asyncio.gather(*(client(i) for i in range(CLIENTS)))
    return acked


@pytest.mark.lab
def test_a_stopped_follower_does_not_stop_the_writes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with LabProcess(data, nservers=3, nclerks=3, seed=11) as lab:
        # The front ends may answer before the launcher's status names a leader.
        wait_for(lambda: _status(data)["leader"] != 0, 10,
                 f"a leader in status.json ({lab.replay})")
        status = _status(data)
        follower = next(int(n) for n in status["servers"] if int(n) != status["leader"])
        pid = status["servers"][str(follower)]["pid"]
        os.kill(pid, signal.SIGSTOP)
        try:
            acked = asyncio.run(put_many(lab.servers(), PUTS, DEADLINE_S))
            assert acked >= PUTS, (f"{acked} of {PUTS} puts acknowledged within {DEADLINE_S:g} s "
                                   f"while follower s{follower} was stopped ({lab.replay})")
        finally:
            os.kill(pid, signal.SIGCONT)

        def caught_up() -> bool:
            servers = _status(data)["servers"]
            newest = max(server["commit"] for server in servers.values())
            return servers[str(follower)]["applied"] >= newest > 0
        wait_for(caught_up, 20, f"follower s{follower} to catch up once running ({lab.replay})")


def _status(data: Path) -> dict:
    """The launcher's status.json (it replaces the file whole, so a read is never torn)."""
    return json.loads((data / "status.json").read_text())
