"""Status reports: what every process tells the launcher a few times a
second. They travel on the control pipe, never through the fault layer;
:mod:`mydns_lab.codec` carries them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ServerStatus:
    """What a server process reports a few times a second."""

    node: int
    pid: int
    role: str
    term: int
    leader: int
    commit: int
    applied: int
    last_index: int
    snapshot_index: int
    raft_state_bytes: int
    disk_full: str = ""  # why its disk takes no writes now ("": it does)


@dataclass(frozen=True, slots=True)
class ClerkStatus:
    """Cumulative counters of one clerk process's front end."""

    clerk: int
    pid: int
    puts_ok: int
    puts_failed: int
    queries_ok: int
    queries_failed: int
    retries: int
    requests_received: int
    latencies_ms: tuple[float, ...]  # a sample of recent operation latencies


@dataclass(frozen=True, slots=True)
class DirectTraffic:
    """Messages a process wrote on its direct pipes since its last report.

    On a reliable network the lab's servers and front ends also talk over
    pipes that skip the router (:class:`mydns_lab.net.transport.Outbox`),
    so the sender counts what the router would have: per link kind
    (``raft``, ``request``, ``reply``) and per message type: those were
    written, and arrive unless the peer dies. ``dropped`` counts, per link
    kind, messages for a peer that had stopped reading (its pipe's backlog
    full, see :class:`mydns_lab.net.transport.FrameWriter`)."""

    links: tuple[tuple[str, int], ...]
    by_type: tuple[tuple[str, int], ...]
    dropped: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class Event:
    """A line worth showing (a role change, an error), from any process."""

    source: str
    text: str
