"""What the launcher shows of an etcd cluster (``--store etcd``) in place of
our own servers: each endpoint's member, whether it answers, whether it
leads, its raft term and the store's revision.

:class:`MemberPoller` asks every endpoint's ``/v3/maintenance/status`` once
a second on a thread of its own, so a member that does not answer never
stalls the launcher's loop; :attr:`MemberPoller.members` is the latest
round, replaced whole.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from dataclasses import dataclass

from ..etcd.options import EtcdOptions, tls_context

POLL_INTERVAL_S = 1.0
POLL_TIMEOUT_S = 0.5


@dataclass(frozen=True, slots=True)
class MemberView:
    endpoint: str
    up: bool
    leader: bool = False
    term: int = 0
    revision: int = 0
    db_bytes: int = 0
    error: str = ""


def poll_member(endpoint: str, options: EtcdOptions) -> tuple[MemberView, int]:
    """One endpoint's view, and the member id it says leads (0: unknown)."""
    request = urllib.request.Request(endpoint + "/v3/maintenance/status", b"{}",
                                     {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=POLL_TIMEOUT_S,
                                    context=tls_context(options)) as answer:
            status = json.loads(answer.read())
        header = status["header"]
        leader = int(status.get("leader", 0))
        return MemberView(endpoint, True, leader == int(header["member_id"]),
                          int(header.get("raft_term", 0)), int(header.get("revision", 0)),
                          int(status.get("dbSize", 0))), leader
    except (OSError, ValueError, KeyError) as exc:
        return MemberView(endpoint, False, error=str(exc)[:80]), 0


class MemberPoller:
    def __init__(self, options: EtcdOptions) -> None:
        self.options = options
        self.members: tuple[MemberView, ...] = tuple(MemberView(e, False)
                                                     for e in options.endpoints)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="etcd-members", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(POLL_TIMEOUT_S * len(self.options.endpoints) + 1)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.members = tuple(poll_member(e, self.options)[0] for e in self.options.endpoints)
            self._stop.wait(POLL_INTERVAL_S)
