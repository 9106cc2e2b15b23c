"""``GET /metrics`` (:mod:`mydns_lab.web.metrics`): what a front end counts
where things happen (DNS answers, Puts over JSON and dyndns2, RFC 2136
updates), what it reads at scrape time (its copy of the records, the rate
limiter, the launcher's status file), parsed back with prometheus_client's
own parser.

The unit test runs a real JsonFrontEnd and DnsService over a real state
machine (``tests.test_admission.MachineClient``), no lab; the lab test
scrapes a running front end.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest
from dnslib import QTYPE, DNSRecord
from prometheus_client.parser import text_string_to_metric_families

from mydns_lab.admission import TrustedSources
from mydns_lab.dns.tsig import KeyRing, TsigKey
from mydns_lab.dns.wire import question_type
from mydns_lab.experiments.labprocess import LabProcess, wait_for
from mydns_lab.net.recordcopy import RecordCache
from mydns_lab.protocol import Record
from mydns_lab.service.dnsfront import DnsService, UdpFrontEnd
from mydns_lab.service.jsonfront import JsonFrontEnd
from mydns_lab.service.settings import FrontEndCounters, FrontEndSettings
from mydns_lab.web.app import ClusterFile, WebContext, build_app
from mydns_lab.web.metrics import FrontEndMetrics, UpdatePath, qtype_label
from tests.test_admission import MachineClient
from tests.test_dnsfront import SECRET, add, sign, update
from tests import webserve
from tests.test_udp_server import RecordingServer

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

STATUS = {"leader": 2, "term": 4,
          "servers": {"1": {"up": True, "pid": 11, "role": "follower", "term": 4, "commit": 17,
                            "applied": 16, "disk_full": ""},
                      "2": {"up": True, "pid": 12, "role": "leader", "term": 4, "commit": 17,
                            "applied": 17, "disk_full": ""},
                      "3": {"up": False, "pid": None, "role": "down", "term": 3, "commit": 9,
                            "applied": 9, "disk_full": ""}},
          "leader_changes": 3, "recent_leader_changes": [],
          "packets": {"sent": 1200, "delivered": 1150, "dropped": 50, "delayed": 7}}


def parse(text: str) -> Samples:
    """Every sample of an exposition: (name, sorted labels) -> value."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def query(name: str, qtype: str = "A") -> bytes:
    return bytes(DNSRecord.question(name, qtype).pack())


async def scrape(context: WebContext, path: str = "/metrics") -> tuple[int, str, str]:
    async with webserve.serving(build_app(context)) as server:
        reply = await webserve.fetch(server.port, path)
        return reply.status, reply.headers["Content-Type"], reply.text


def test_metrics_count_answers_and_updates_and_read_the_cluster_at_scrape(tmp_path: Path) -> None:
    status_file = tmp_path / "status.json"
    status_file.write_text(json.dumps({**STATUS, "written_at": time.time()}))
    cache = RecordCache()
    cache.apply((Record("gpu", ("192.0.2.7",), owner="someone", seq=1),), serial=1, full=True)
    cache.heard_at = time.monotonic()
    counters = FrontEndCounters(rrl_dropped=5, rrl_slipped=2)
    cluster = ClusterFile(str(status_file))
    metrics = FrontEndMetrics(cache, cluster.read, counters)
    client = MachineClient()
    json_front = JsonFrontEnd(client, counters, metrics=metrics)  # type: ignore[arg-type]
    keys = KeyRing([TsigKey("laptop", SECRET)])
    dns_front = DnsService(client, FrontEndSettings((1,)), cache, counters,  # type: ignore[arg-type]
                           keys, metrics)
    context = WebContext(0, "mydns.", cache, TrustedSources(("127.0.0.0/8",)),
                         partial(json_front.handle, path=UpdatePath.DYNDNS2), cluster,
                         metrics=metrics)

    async def events() -> None:
        for fields in ({"Key": "alice", "Token": "a"}, {"Key": "alice", "Token": "b"},
                       {"Key": "bob", "Token": "b"}):
            await json_front.handle(json.dumps({"Type": "Put", "Value": "192.0.2.1",
                                                **fields}).encode(), "192.0.2.50")
        await json_front.handle(b'{"Type":"Query","Key":"alice"}', "192.0.2.50")  # no update
        assert (await context.json_request({"Type": "Put", "Key": "carol", "Token": "c",
                                            "Value": "192.0.2.3"}, None))["Outcome"] == "claimed"
        for packet in (query("gpu.mydns."), query("gpu.mydns."), query("nothere.mydns."),
                       query("gpu.mydns.", "AAAA"), query("example.com.")):
            assert dns_front.answer_now(packet) is not None
        assert await dns_front.answer(query("gpu.mydns.", "TXT"), True) is not None  # TCP
        signed, _ = sign(update(updates=[add("laptop.mydns.", "192.0.2.9")]),
                         when=int(time.time()))
        assert await dns_front.answer(signed, False) is not None
        assert await dns_front.answer(update(updates=[add("x.mydns.", "192.0.2.9")]),
                                      False) is not None  # unsigned: refused
    asyncio.run(events())

    code, content_type, text = asyncio.run(scrape(context))
    assert code == 200 and content_type.startswith("text/plain")
    got = parse(text)
    queries = "mydns_dns_queries_total"
    assert sample(got, queries, qtype="A", rcode="NOERROR") == 2
    assert sample(got, queries, qtype="A", rcode="NXDOMAIN") == 1
    assert sample(got, queries, qtype="AAAA", rcode="NOERROR") == 1  # NODATA
    assert sample(got, queries, qtype="A", rcode="REFUSED") == 1
    assert sample(got, queries, qtype="TXT", rcode="NOERROR") == 1
    assert sum(v for (name, _), v in got.items() if name == queries) == 6  # not the UPDATEs
    assert sample(got, "mydns_dns_answer_seconds_count") == 6
    assert sample(got, "mydns_dns_answer_seconds_bucket", le="+Inf") == 6
    assert sample(got, "mydns_dns_answer_seconds_bucket", le="2.5") == 6
    updates = "mydns_updates_total"
    assert sample(got, updates, path="json", outcome="claimed") == 2
    assert sample(got, updates, path="json", outcome="owned") == 1
    assert sample(got, updates, path="dyndns2", outcome="claimed") == 1
    assert sample(got, updates, path="rfc2136", outcome="noerror") == 1
    assert sample(got, updates, path="rfc2136", outcome="refused") == 1
    assert sample(got, "mydns_update_seconds_count", path="json") == 3
    assert sample(got, "mydns_update_seconds_count", path="rfc2136") == 2
    assert sample(got, "mydns_update_seconds_bucket", path="json", le="+Inf") == 3
    assert "laptop" in client.store.machine.records  # the signed UPDATE did happen
    # Read at scrape time: the copy, the rate limiter, the launcher's status file.
    assert sample(got, "mydns_records_loaded") == 1
    assert 0 <= sample(got, "mydns_records_staleness_seconds") < 60
    assert sample(got, "mydns_records_names") == 1
    assert sample(got, "mydns_dns_rate_limited_total", action="dropped") == 5
    assert sample(got, "mydns_dns_rate_limited_total", action="slipped") == 2
    for server, up, leader, term, commit, applied in (("1", 1, 0, 4, 17, 16),
                                                      ("2", 1, 1, 4, 17, 17),
                                                      ("3", 0, 0, 3, 9, 9)):
        assert sample(got, "mydns_server_up", server=server) == up
        assert sample(got, "mydns_server_leader", server=server) == leader
        assert sample(got, "mydns_server_term", server=server) == term
        assert sample(got, "mydns_server_commit_index", server=server) == commit
        assert sample(got, "mydns_server_applied_index", server=server) == applied
    assert sample(got, "mydns_leader_changes_total") == 3
    assert sample(got, "mydns_router_packets_sent_total") == 1200
    assert sample(got, "mydns_router_packets_dropped_total") == 50
    assert 0 <= sample(got, "mydns_cluster_status_age_seconds") < 60


def test_answers_a_socket_batch_takes_from_the_cache_are_counted_each() -> None:
    """The socket loop's fast path counts its answers per batch, each with
    the batch's time: the same totals as one by one."""
    cache = RecordCache()
    cache.apply((Record("gpu", ("192.0.2.7",), owner="someone", seq=1),), serial=1, full=True)
    metrics = FrontEndMetrics(cache)
    front = DnsService(None, FrontEndSettings((1,)), cache, FrontEndCounters(),  # type: ignore
                       metrics=metrics)
    udp = UdpFrontEnd(None, front)  # type: ignore[arg-type]
    udp.server = server = RecordingServer()  # type: ignore[assignment]
    packets = [query("gpu.mydns."), query("nothere.mydns."), query("gpu.mydns.", "AAAA")]
    udp.datagrams_received([(packet, ("127.0.0.1", 5300)) for packet in packets])  # learnt
    udp.datagrams_received([(packet, ("127.0.0.1", 5300)) for packet in packets * 3])
    assert server.sent_many == 9 and len(server.sent) == 12
    got = parse(metrics.exposition()[0].decode())
    queries = "mydns_dns_queries_total"
    assert sample(got, queries, qtype="A", rcode="NOERROR") == 4
    assert sample(got, queries, qtype="A", rcode="NXDOMAIN") == 4
    assert sample(got, queries, qtype="AAAA", rcode="NOERROR") == 4
    assert sample(got, "mydns_dns_answer_seconds_count") == 12
    assert sample(got, "mydns_dns_answer_seconds_bucket", le="2.5") == 12
    assert front.counters.requests_received == front.counters.replies_sent == 12


def test_without_a_status_file_or_a_loaded_copy_the_metrics_say_so() -> None:
    """No launcher: no cluster series. A copy never heard from: not loaded,
    infinitely stale, and /readyz 503."""
    context = WebContext(0, "mydns.", RecordCache(), TrustedSources(()),
                         JsonFrontEnd(MachineClient(), FrontEndCounters()).handle,  # type: ignore[arg-type]
                         metrics=FrontEndMetrics(RecordCache()))
    code, _, text = asyncio.run(scrape(context))
    got = parse(text)
    assert code == 200
    assert sample(got, "mydns_records_loaded") == 0
    assert sample(got, "mydns_records_staleness_seconds") == float("inf")
    assert not any(name.startswith(("mydns_server_", "mydns_router_", "mydns_leader_"))
                   for name, _ in got)
    assert asyncio.run(scrape(context, "/readyz"))[0] == 503
    assert asyncio.run(scrape(context, "/healthz"))[0] == 200


def test_openmetrics_is_served_to_who_asks_for_it() -> None:
    context = WebContext(0, "mydns.", RecordCache(), TrustedSources(()),
                         JsonFrontEnd(MachineClient(), FrontEndCounters()).handle)  # type: ignore[arg-type]

    async def get() -> tuple[str, str]:
        async with webserve.serving(build_app(context)) as server:
            reply = await webserve.fetch(server.port, "/metrics", headers={
                "Accept": "application/openmetrics-text; version=1.0.0"})
            return reply.headers["Content-Type"], reply.text
    content_type, text = asyncio.run(get())
    assert content_type.startswith("application/openmetrics-text")
    assert text.rstrip().endswith("# EOF")


def test_question_types_label_from_a_small_set() -> None:
    assert question_type(query("a.mydns.", "AAAA")) == QTYPE.AAAA
    assert question_type(b"\0" * 12) is None               # no question
    assert question_type(b"\0\0\0\0\0\1" + b"\0" * 6 + b"\x05ab") is None  # cut off
    assert question_type(b"\0\0\0\0\0\1" + b"\0" * 6 + b"\x41ab\0\0\1") is None  # label type
    assert [qtype_label(t) for t in (1, 28, 65, None, 65000)] == ["A", "AAAA", "HTTPS", "none",
                                                                  "other"]


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


@pytest.mark.lab
def test_a_running_front_end_counts_a_put_and_a_query(tmp_path: Path) -> None:
    with LabProcess(tmp_path / "data", nservers=3, nclerks=2, seed=13) as lab:
        base = f"http://127.0.0.1:{lab.http_port}"
        wait_for(lambda: fetch(base + "/readyz")[0] == 200, 10,
                 f"/readyz to answer 200 ({lab.replay})")
        put = lab.call(0, {"Type": "Put", "Key": "metered", "Value": "192.0.2.44",
                           "Token": "metrics-test"})
        assert put.get("Outcome") == "claimed", put

        def answered() -> bool:  # the front end's copy may lag the Put by a watch round
            asked = dns.message.make_query("metered.mydns.", "A")
            try:
                reply = dns.query.udp(asked, "127.0.0.1", timeout=1.0, port=lab.port)
            except (OSError, dns.exception.Timeout):
                return False
            return reply.rcode() == dns.rcode.NOERROR and bool(reply.answer)
        wait_for(answered, 10, f"metered.mydns. to resolve ({lab.replay})")

        def scraped() -> Samples:
            code, text = fetch(base + "/metrics")
            assert code == 200, text
            return parse(text)

        def cluster_seen() -> bool:
            # status.json lists every server from the start, with term and
            # commit 0 until its first report reaches the launcher.
            got = scraped()
            return (all(got.get(("mydns_server_term", (("server", s),)), 0) >= 1
                        and got.get(("mydns_server_commit_index", (("server", s),)), 0) >= 1
                        for s in "123")
                    and sum(got.get(("mydns_server_leader", (("server", s),)), 0)
                            for s in "123") == 1)
        wait_for(cluster_seen, 10, f"the cluster's servers in /metrics ({lab.replay})")
        got = scraped()
        assert sample(got, "mydns_updates_total", path="json", outcome="claimed") >= 1
        assert sample(got, "mydns_dns_queries_total", qtype="A", rcode="NOERROR") >= 1
        assert sample(got, "mydns_update_seconds_count", path="json") >= 1
        for server in "123":
            assert sample(got, "mydns_server_term", server=server) >= 1
            assert sample(got, "mydns_server_commit_index", server=server) >= 1
            assert sample(got, "mydns_server_up", server=server) == 1
        assert sample(got, "mydns_records_loaded") == 1
        assert sample(got, "mydns_records_staleness_seconds") < 3
        assert sample(got, "mydns_router_packets_sent_total") > 0


def test_udp_replies_the_socket_dropped_are_counted_once_it_is_bound() -> None:
    """``mydns_udp_replies_dropped_total`` reads the UDP socket's own count
    (UdpServer.dropped) at scrape time; before the socket is bound there
    is no such series."""
    metrics = FrontEndMetrics(RecordCache())
    assert not any(name.startswith("mydns_udp_") for name, _ in
                   parse(metrics.exposition()[0].decode()))
    socket_counts = SimpleNamespace(dropped=0)
    metrics.count_udp_drops(socket_counts)
    assert sample(parse(metrics.exposition()[0].decode()), "mydns_udp_replies_dropped_total") == 0
    socket_counts.dropped = 7
    assert sample(parse(metrics.exposition()[0].decode()), "mydns_udp_replies_dropped_total") == 7
