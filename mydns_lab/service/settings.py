"""A front end's flags and counters."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..admission import AdmissionPolicy
from ..dns.nameservers import DEFAULT_NAME_SERVERS, NameServer
from ..etcd.options import EtcdOptions

LOOPBACK_NETWORKS = ("127.0.0.0/8", "::1/128")
MAX_LATENCY_SAMPLES = 512
PUT_TIMEOUT_S = 3.0
QUERY_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class FrontEndSettings:
    servers: tuple[int, ...]
    port: int = 9876
    bind: str = "127.0.0.1"
    zone: str = "mydns."
    ttl: int = 60
    dns_reads: str = "cache"          # or "linearizable"
    keys_file: str | None = None      # TSIG keys for RFC 2136 updates
    trusted: tuple[str, ...] = LOOPBACK_NETWORKS  # CIDR networks exempt from limits, answered Stats
    admission: AdmissionPolicy = AdmissionPolicy()
    rrl: int = 100                    # DNS responses a second to one client network (0: no limit)
    name_servers: tuple[NameServer, ...] = DEFAULT_NAME_SERVERS  # the apex NS set; reserved names
    http_port: int = 0                # HTTP (dyndns2, status, metrics) on http_port + i; 0: none
    http_bind: str | None = None      # None: the same address as DNS (bind)
    http_cert: str | None = None      # with http_key: HTTPS instead of HTTP
    http_key: str | None = None
    status_file: str | None = None    # the launcher's status.json, for the status page and metrics
    status_page: str = "local"        # --status-page: who sees the names on / (web/status.py)
    etcd: EtcdOptions | None = None   # --store etcd: the records are in etcd, not our servers


@dataclass(slots=True)
class FrontEndCounters:
    requests_received: int = 0
    replies_sent: int = 0
    puts_ok: int = 0
    puts_failed: int = 0
    queries_ok: int = 0
    queries_failed: int = 0
    internal_errors: int = 0
    rrl_dropped: int = 0              # UDP DNS responses over --rrl, not sent
    rrl_slipped: int = 0              # ... sent truncated instead (TC=1, no records)
    latencies_ms: list[float] = field(default_factory=list)

    def record_latency(self, started: float) -> None:
        self.latencies_ms.append((time.monotonic() - started) * 1000)
        if len(self.latencies_ms) > MAX_LATENCY_SAMPLES:
            del self.latencies_ms[:MAX_LATENCY_SAMPLES // 2]
