"""What the launcher knows about a running lab, built only from the status
reports processes send (never by reaching into them).

The dashboard renders a :class:`LabState`; the final statistics and
``last-run.json`` come from :meth:`LabState.final_stats`.
"""

from __future__ import annotations

import collections
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping

from ..reports import ClerkStatus, DirectTraffic, Event, ServerStatus

RAFT_RPC_TYPES = ("RequestVote", "AppendEntries", "Heartbeat", "InstallSnapshot")


def p50_p99(samples: Iterable[float]) -> tuple[float, float]:
    """Median and 99th percentile (nearest rank below) of ``samples``;
    zeros when there are none."""
    ordered = sorted(samples)
    if not ordered:
        return 0.0, 0.0
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def loss_rate(counters: Mapping[str, int]) -> float:
    """Dropped over sent in one set of router counters (0 when none sent)."""
    sent = counters.get("sent", 0)
    return counters.get("dropped", 0) / sent if sent else 0.0


@dataclass(slots=True)
class ServerView:
    node: int
    up: bool = False
    pid: int = 0
    status: ServerStatus | None = None
    restarts: int = 0


@dataclass(slots=True)
class LabState:
    nservers: int
    nclerks: int
    started: float = field(default_factory=time.monotonic)
    servers: dict[int, ServerView] = field(default_factory=dict)
    clerks: dict[int, ClerkStatus] = field(default_factory=dict)
    router: dict[str, Any] = field(default_factory=lambda: {"links": {}, "by_type": {}})
    router_final: bool = False
    direct: dict[str, dict[str, int]] = field(
        default_factory=lambda: {"links": {}, "by_type": {}, "dropped": {}})
    leader: int = 0
    leader_term: int = 0
    leader_changes: list[tuple[float, int, int]] = field(default_factory=list)  # (t, term, node)
    events: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=200))
    crashes_injected: int = 0
    unexpected_exits: list[str] = field(default_factory=list)
    ops_history: collections.deque[tuple[float, int]] = field(
        default_factory=lambda: collections.deque(maxlen=64))
    etcd_members: tuple[Any, ...] = ()  # --store etcd: the latest MemberViews

    def __post_init__(self) -> None:
        for i in range(1, self.nservers + 1):
            self.servers.setdefault(i, ServerView(i))

    def disk_alarm(self) -> str:
        """One line for the operator when a running server's disk takes no
        writes ("" when none): which servers, and why, in its own words."""
        full = {n: v.status.disk_full for n, v in sorted(self.servers.items())
                if v.up and v.status is not None and v.status.disk_full}
        if not full:
            return ""
        names = ",".join(f"s{n}" for n in full)
        return f"DISK FULL on {names}: {next(iter(full.values()))}"

    # --- updates --------------------------------------------------------------------

    def on_report(self, report: object) -> None:
        match report:
            case ServerStatus():
                view = self.servers[report.node]
                view.status = report
                if report.role == "leader" and (report.term, report.node) != (self.leader_term,
                                                                               self.leader):
                    if report.term >= self.leader_term:
                        self.leader, self.leader_term = report.node, report.term
                        self.leader_changes.append((self.elapsed(), report.term, report.node))
            case ClerkStatus():
                self.clerks[report.clerk] = report
                self.ops_history.append((time.monotonic(), self.total_ops()))
            case DirectTraffic() if not self.router_final:
                for kind_counts, into in ((report.links, self.direct["links"]),
                                          (report.by_type, self.direct["by_type"]),
                                          (report.dropped, self.direct["dropped"])):
                    for kind, count in kind_counts:
                        into[kind] = into.get(kind, 0) + count
            case Event():
                self.log(f"{report.source}: {report.text}")

    def on_router_stats(self, stats: dict[str, Any], final: bool = False) -> None:
        """Take the router's counters; once ``final`` ones arrived (taken
        before the shutdown began), later ones are ignored."""
        if not self.router_final:
            self.router = stats
            self.router_final = final

    def log(self, line: str) -> None:
        self.events.append(f"{self.elapsed():7.1f}s {line}")

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    # --- derived figures -------------------------------------------------------------

    def total_ops(self) -> int:
        return sum(c.puts_ok + c.queries_ok for c in self.clerks.values())

    def ops_per_second(self) -> float:
        if len(self.ops_history) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self.ops_history[0], self.ops_history[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def latency_percentiles(self) -> tuple[float, float]:
        return p50_p99(x for c in self.clerks.values() for x in c.latencies_ms)

    def traffic(self) -> dict[str, Any]:
        """Every message between servers and front ends, in the router's
        form (``links`` of counters per link kind, ``by_type``): what the
        router carried plus what went on direct pipes: delivered, or dropped
        for a peer that had stopped reading."""
        links = {kind: dict(counters) for kind, counters in self.router.get("links", {}).items()}
        for outcome, counts in (("delivered", self.direct["links"]),
                                ("dropped", self.direct["dropped"])):
            for kind, count in counts.items():
                counters = links.setdefault(kind, {"sent": 0, "delivered": 0, "dropped": 0,
                                                   "delayed": 0})
                counters["sent"] = counters.get("sent", 0) + count
                counters[outcome] = counters.get(outcome, 0) + count
        by_type = dict(self.router.get("by_type", {}))
        for kind, count in self.direct["by_type"].items():
            by_type[kind] = by_type.get(kind, 0) + count
        return {"links": links, "by_type": by_type}

    def packets(self) -> dict[str, int]:
        totals = {"sent": 0, "delivered": 0, "dropped": 0, "delayed": 0}
        for counters in self.traffic()["links"].values():
            for key in totals:
                totals[key] += counters.get(key, 0)
        return totals

    def client_loss_rate(self) -> float:
        failed = sum(c.puts_failed + c.queries_failed for c in self.clerks.values())
        total = failed + self.total_ops()
        return failed / total if total else 0.0

    def final_stats(self, options: dict[str, Any]) -> dict[str, Any]:
        traffic = self.traffic()
        packets = self.packets()
        by_type = traffic["by_type"]
        p50, p99 = self.latency_percentiles()
        return {
            "options": options,
            "duration_s": round(self.elapsed(), 2),
            "total_packets": packets["sent"],
            "packets": packets,
            "links": traffic["links"],
            "direct": {kind: dict(counts) for kind, counts in self.direct.items()},
            "puts": sum(c.puts_ok for c in self.clerks.values()),
            "puts_failed": sum(c.puts_failed for c in self.clerks.values()),
            "queries": sum(c.queries_ok for c in self.clerks.values()),
            "queries_failed": sum(c.queries_failed for c in self.clerks.values()),
            "client_retries": sum(c.retries for c in self.clerks.values()),
            "rpcs": sum(by_type.get(t, 0) for t in RAFT_RPC_TYPES),
            "rpcs_by_type": by_type,
            "network_loss_rate": round(loss_rate(packets), 4),
            "client_loss_rate": round(self.client_loss_rate(), 4),
            "latency_ms_p50": round(p50, 2),
            "latency_ms_p99": round(p99, 2),
            "max_term": max((v.status.term for v in self.servers.values() if v.status), default=0),
            "leader_changes": len(self.leader_changes),
            "crashes_injected": self.crashes_injected,
            "unexpected_exits": list(self.unexpected_exits),
            "etcd_members": [asdict(m) for m in self.etcd_members],
        }
