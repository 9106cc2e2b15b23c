"""A front end's ``GET /metrics``: Prometheus exposition by prometheus_client.

Each front end has one :class:`FrontEndMetrics`, its own CollectorRegistry
(never the library's global one: the lab runs several front ends, and tests
build many). Who calls what:

* the front end's DnsService calls :meth:`FrontEndMetrics.dns_answered`
  for every DNS response it sends (queries; not the rate limiter's slips)
  and :meth:`FrontEndMetrics.update_done` with ``UpdatePath.RFC2136`` for
  every UPDATE it answers;
* its JsonFrontEnd calls :meth:`FrontEndMetrics.update_done` for every Put,
  under the path its caller names: ``json`` for a datagram, ``dyndns2`` for
  a Put the HTTP routes send through :attr:`WebContext.handle_json`;
* the rest is read when Prometheus scrapes: this front end's copy of the
  records (loaded, how long since the leader last answered its watch), the
  rate limiter's counters, and the launcher's ``status.json`` (servers'
  terms, indexes, roles, leader changes, the router's packet counts).

Every metric and its labels are listed in docs/service.md, "Metrics and
health". Label values come from small fixed sets (type and rcode
mnemonics, paths, outcomes and refusal codes), never from what a client
chose, so a hostile client cannot grow the number of series.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from enum import StrEnum
from typing import Any, Callable, Iterator, Mapping, Protocol

from dnslib import QTYPE, RCODE
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily, Metric)
from prometheus_client.exposition import choose_encoder
from prometheus_client.utils import floatToGoString

from ..net.recordcopy import RecordCache
from .http import App, Request, Response

DNS_ANSWER_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                        0.1, 0.25, 0.5, 1.0, 2.5)
"""A cached answer takes tens of microseconds; a linearizable read a round trip."""
UPDATE_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""An update is one or more commits through Raft; a front end gives up after 3 s."""


class UpdatePath(StrEnum):
    """How an update reached the front end: the ``path`` label."""

    JSON = "json"          # a JSON Put datagram (put.py, the original's clients)
    DYNDNS2 = "dyndns2"    # HTTP /nic/update, sent on as a JSON Put
    RFC2136 = "rfc2136"    # a DNS UPDATE (nsupdate)


class RateLimitCounts(Protocol):
    """The DNS rate limiter's counters (the front end's FrontEndCounters)."""

    rrl_dropped: int
    rrl_slipped: int


class DroppedCount(Protocol):
    """A UDP socket's count of replies it could not send
    (:class:`mydns_lab.net.udp.UdpServer`)."""

    dropped: int


ClusterStatus = Callable[[], "Mapping[str, Any] | None"]
"""The launcher's status.json as last read (``ClusterFile.read``), or None."""


_QTYPE_LABELS: dict[int | None, str] = {
    number: name for number, name in QTYPE.forward.items() if isinstance(name, str)}
_QTYPE_LABELS[None] = "none"


def qtype_label(qtype: int | None) -> str:
    """A question type's mnemonic (``A``, ``AAAA``); ``other`` for a number
    with none, so clients cannot make series at will; ``none`` without a
    question."""
    return _QTYPE_LABELS.get(qtype, "other")


def rcode_label(rcode: int) -> str:
    """An rcode's mnemonic (``NOERROR``, ``NXDOMAIN``); ``RCODE<n>`` for the
    few of the 16 header values without one."""
    name = RCODE.forward.get(rcode)
    return name if isinstance(name, str) else f"RCODE{rcode}"


_RCODE_LABELS = tuple(rcode_label(rcode) for rcode in range(16))


def put_outcome(reply: Mapping[str, Any]) -> str:
    """The ``outcome`` label of a JSON Put from its reply: the ``Outcome``
    of a PutOk (``claimed``, ``updated``), else the refusal's ``Code``."""
    return str(reply.get("Outcome") or reply.get("Code") or "unknown")


class FrontEndMetrics:
    """One front end's metrics and the registry /metrics exposes.

    ``records``, ``cluster`` and ``rate_limits`` are read at scrape time;
    each may be None (unit tests), which leaves its metrics out. The event
    methods are called on the front end's event loop; each costs a few
    microseconds."""

    def __init__(self, records: RecordCache | None = None, cluster: ClusterStatus | None = None,
                 rate_limits: RateLimitCounts | None = None) -> None:
        self.registry = CollectorRegistry()
        self._dns = _DnsTally()
        self.registry.register(self._dns)
        self._updates = Counter(
            "mydns_updates", "Updates answered, by path and outcome (json and dyndns2: the "
            "Put's Outcome or refusal Code; rfc2136: the response's rcode, lower case)",
            ["path", "outcome"], registry=self.registry)
        self._update_seconds = Histogram(
            "mydns_update_seconds", "Time from an update's request to its answer, by path",
            ["path"], buckets=UPDATE_BUCKETS_S, registry=self.registry)
        # (path, outcome) -> its counter and histogram: outcomes are a fixed,
        # small set (put_outcome's Outcomes and Codes, the rcodes)
        self._update_children: dict[tuple[UpdatePath, str], tuple[Any, Any]] = {}
        self._scraped = _ScrapeTimeCollector(records, cluster, rate_limits)
        self.registry.register(self._scraped)

    def count_udp_drops(self, udp: DroppedCount) -> None:
        """Expose ``udp.dropped`` (the front end's UDP socket, once bound)."""
        self._scraped.udp = udp

    def dns_answered(self, qtype: int | None, rcode: int, seconds: float) -> None:
        """A DNS response sent: its question's type (None: it has none),
        the 4-bit rcode of its header, and how long it took."""
        self._dns.count(_QTYPE_LABELS.get(qtype, "other"), _RCODE_LABELS[rcode & 0xF], seconds)

    def dns_answered_many(self, answered: dict[tuple[int, int], int], seconds: float) -> None:
        """DNS responses sent together (one read of the UDP socket answered
        from the response cache): how many per (question type, rcode), each
        counted as taking ``seconds``, the time of the whole batch (an upper
        bound of its own)."""
        for (qtype, rcode), count in answered.items():
            self._dns.count(_QTYPE_LABELS.get(qtype, "other"), _RCODE_LABELS[rcode & 0xF],
                            seconds, count)

    def update_done(self, path: UpdatePath, outcome: str, seconds: float) -> None:
        """An update answered over ``path``: ``outcome`` is what it did
        (``claimed``, ``updated``) or why it was refused (the JSON ``Code``,
        or for rfc2136 the rcode in lower case, ``noerror`` when done)."""
        children = self._update_children.get((path, outcome))
        if children is None:  # labels() takes a lock and builds a key: once per kind
            children = (self._updates.labels(path.value, outcome),
                        self._update_seconds.labels(path.value))
            self._update_children[(path, outcome)] = children
        children[0].inc()
        children[1].observe(seconds)

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """The registry in the format ``accept`` asks for (OpenMetrics or the
        Prometheus text format), and that format's Content-Type."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type


class _DnsTally:
    """DNS responses by (qtype, rcode) and their latency, in plain numbers
    turned into metric families at scrape time. DNS answers are the hot
    path: a cached answer costs about 4 us, and prometheus_client's
    labelled Counter and Histogram (a lock and a label lookup each) would
    add about 5 us more to every one; this adds about 1 us. Only the front
    end's event loop calls :meth:`count` and :meth:`collect` (the scrape)."""

    def __init__(self) -> None:
        self._responses: dict[tuple[str, str], int] = {}
        self._buckets = [0] * (len(DNS_ANSWER_BUCKETS_S) + 1)  # the last: above every bound
        self._sum_s = 0.0

    def count(self, qtype: str, rcode: str, seconds: float, responses: int = 1) -> None:
        """``responses`` responses of one kind, each taking ``seconds``."""
        key = (qtype, rcode)
        self._responses[key] = self._responses.get(key, 0) + responses
        self._buckets[bisect_left(DNS_ANSWER_BUCKETS_S, seconds)] += responses
        self._sum_s += seconds * responses

    def describe(self) -> Iterator[Metric]:
        return self._families(empty=True)

    def collect(self) -> Iterator[Metric]:
        return self._families(empty=False)

    def _families(self, empty: bool) -> Iterator[Metric]:
        responses = CounterMetricFamily("mydns_dns_queries", "DNS responses sent, by question "
                                        "type and rcode", labels=["qtype", "rcode"])
        latency = HistogramMetricFamily("mydns_dns_answer_seconds",
                                        "Time from a DNS request to its response")
        if not empty:
            for (qtype, rcode), count in sorted(self._responses.items()):
                responses.add_metric([qtype, rcode], count)
            cumulative, buckets = 0, []
            for bound, count in zip((*DNS_ANSWER_BUCKETS_S, float("inf")), self._buckets):
                cumulative += count
                buckets.append((floatToGoString(bound), cumulative))
            latency.add_metric([], buckets, self._sum_s)
        return iter((responses, latency))


class _ScrapeTimeCollector:
    """The metrics read when Prometheus scrapes (a custom collector)."""

    def __init__(self, records: RecordCache | None, cluster: ClusterStatus | None,
                 rate_limits: RateLimitCounts | None) -> None:
        self._records, self._cluster, self._rate_limits = records, cluster, rate_limits
        self.udp: DroppedCount | None = None

    def describe(self) -> Iterator[Metric]:
        """Every family, empty: the names the registry checks for clashes."""
        yield from self._copy_families()
        yield from self._rate_limit_families()
        yield self._udp_family()
        yield from _cluster_families(None)

    def collect(self) -> Iterator[Metric]:
        if self._records is not None:
            yield from self._copy_families()
        if self._rate_limits is not None:
            yield from self._rate_limit_families()
        if self.udp is not None:
            yield self._udp_family()
        status = self._cluster() if self._cluster is not None else None
        if status is not None:
            yield from _cluster_families(status)

    def _copy_families(self) -> Iterator[Metric]:
        records = self._records
        loaded = GaugeMetricFamily(
            "mydns_records_loaded", "1 once this front end's copy of the records has loaded")
        staleness = GaugeMetricFamily(
            "mydns_records_staleness_seconds", "Seconds since the leader last answered this "
            "front end's watch or sent a page of its copy (+Inf: never); /readyz fails above 3")
        names = GaugeMetricFamily("mydns_records_names", "Names in this front end's copy")
        if records is not None:
            loaded.add_metric([], 1.0 if records.loaded else 0.0)
            staleness.add_metric([], time.monotonic() - records.heard_at)
            names.add_metric([], float(len(records)))
        return iter((loaded, staleness, names))

    def _rate_limit_families(self) -> Iterator[Metric]:
        limited = CounterMetricFamily(
            "mydns_dns_rate_limited", "UDP DNS responses over --rrl: dropped (not sent) or "
            "slipped (sent truncated, TC=1)", labels=["action"])
        counts = self._rate_limits
        if counts is not None:
            limited.add_metric(["dropped"], counts.rrl_dropped)
            limited.add_metric(["slipped"], counts.rrl_slipped)
        return iter((limited,))

    def _udp_family(self) -> Metric:
        dropped = CounterMetricFamily(
            "mydns_udp_replies_dropped", "UDP replies (DNS and JSON) not sent: the socket's "
            "send queue was full, or the kernel refused the destination")
        if self.udp is not None:
            dropped.add_metric([], self.udp.dropped)
        return dropped


def _cluster_families(status: Mapping[str, Any] | None) -> Iterator[Metric]:
    """The launcher's ``status.json`` (``Lab._write_status_file``) as
    metric families; empty families for None."""
    server = ["server"]
    up = GaugeMetricFamily("mydns_server_up", "1 when the launcher sees the server running",
                           labels=server)
    leader = GaugeMetricFamily("mydns_server_leader", "1 for the server the launcher last saw "
                               "lead, 0 for the others", labels=server)
    term = GaugeMetricFamily("mydns_server_term", "The server's current Raft term",
                             labels=server)
    commit = GaugeMetricFamily("mydns_server_commit_index", "The server's commit index",
                               labels=server)
    applied = GaugeMetricFamily("mydns_server_applied_index", "The server's applied index",
                                labels=server)
    changes = CounterMetricFamily("mydns_leader_changes", "Leader changes the launcher has "
                                  "seen since it started")
    sent = CounterMetricFamily("mydns_router_packets_sent", "Messages the lab's router took "
                               "from the processes")
    dropped = CounterMetricFamily("mydns_router_packets_dropped", "Messages the router's "
                                  "fault layer dropped")
    age = GaugeMetricFamily("mydns_cluster_status_age_seconds", "Seconds since the launcher "
                            "wrote the status these metrics come from")
    if status is not None:
        servers = status.get("servers")
        for node, view in (servers.items() if isinstance(servers, dict) else ()):
            if not isinstance(view, dict):
                continue
            labels = [str(node)]
            up.add_metric(labels, 1.0 if view.get("up") else 0.0)
            leader.add_metric(labels, 1.0 if str(node) == str(status.get("leader")) else 0.0)
            term.add_metric(labels, _number(view.get("term")))
            commit.add_metric(labels, _number(view.get("commit")))
            applied.add_metric(labels, _number(view.get("applied")))
        changes.add_metric([], _number(status.get("leader_changes")))
        packets = status.get("packets")
        packets = packets if isinstance(packets, dict) else {}
        sent.add_metric([], _number(packets.get("sent")))
        dropped.add_metric([], _number(packets.get("dropped")))
        written_at = status.get("written_at")
        if isinstance(written_at, (int, float)):
            age.add_metric([], max(0.0, time.time() - written_at))
    return iter((up, leader, term, commit, applied, changes, sent, dropped, age))


def _number(value: object) -> float:
    """A count from the status file; 0 for anything that is not one."""
    return float(value) if isinstance(value, (int, float)) else 0.0


class MetricsSource(Protocol):
    """What /metrics reads: ``app.WebContext`` is one (a protocol, so that
    this module need not import ``app``, which imports it)."""

    @property
    def metrics(self) -> FrontEndMetrics: ...


def add_routes(app: App, context: MetricsSource) -> None:
    """``GET /metrics`` on ``app``: ``context.metrics``'s registry."""
    metrics = context.metrics

    async def serve_metrics(request: Request) -> Response:
        body, content_type = metrics.exposition(request.headers.get("Accept", ""))
        return Response(body=body, content_type=content_type)

    app.add_get("/metrics", serve_metrics)
