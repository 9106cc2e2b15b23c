"""Response rate limiting (:mod:`mydns_lab.dns.rrl`): the limiter on a fake
clock (rate, slip 2, /24 and /56 networks, trusted sources, memory bound,
off), its slip reply, the front end's use of it, and one lab test that
floods a real front end over UDP and then asks over TCP.

The random part is seeded; a failure prints the seed and the command that
replays it (``MYDNS_RRL_SEED=<n>`` runs that seed alone).
"""

from __future__ import annotations

import os
import random
import socket
import time

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from mydns_lab.admission import TrustedSources
from mydns_lab.dns.answers import Answer, Drop
from mydns_lab.dns.rrl import ResponseRateLimiter, Verdict, network_key, truncated_reply
from mydns_lab.experiments.labprocess import LabProcess, wait_for
from mydns_lab.net.recordcopy import RecordCache
from mydns_lab.service.dnsfront import DnsService, UdpFrontEnd
from mydns_lab.service.settings import FrontEndCounters, FrontEndSettings
from tests.test_udp_server import RecordingServer

SEND, DROP, SLIP = Verdict.SEND, Verdict.DROP, Verdict.SLIP
REPLAY = "MYDNS_RRL_SEED={seed} .venv/bin/python -m pytest tests/test_rrl.py -k random"
SEEDS = [int(os.environ["MYDNS_RRL_SEED"])] if "MYDNS_RRL_SEED" in os.environ else [1, 2, 3, 4]


def verdicts(limiter: ResponseRateLimiter, source: str, count: int, now_s: float) -> list[Verdict]:
    return [limiter.verdict(source, now_s) for _ in range(count)]


# --- the limiter -----------------------------------------------------------------------------

def test_a_burst_of_rate_then_rate_a_second() -> None:
    limiter = ResponseRateLimiter(10)
    assert verdicts(limiter, "192.0.2.1", 10, 100.0) == [SEND] * 10
    assert SEND not in verdicts(limiter, "192.0.2.1", 50, 100.0)
    assert verdicts(limiter, "192.0.2.1", 5, 100.5).count(SEND) == 5      # half a second: 5
    assert SEND not in verdicts(limiter, "192.0.2.1", 5, 100.5)
    assert verdicts(limiter, "192.0.2.1", 30, 160.0).count(SEND) == 10    # full again, no more


def test_a_client_under_the_rate_is_always_answered() -> None:
    limiter = ResponseRateLimiter(10)
    assert all(limiter.verdict("192.0.2.1", 50.0 + i * 0.1) is SEND for i in range(1000))


@pytest.mark.parametrize("seed", SEEDS)
def test_random_arrivals_never_get_more_than_burst_plus_rate_times_elapsed(seed: int) -> None:
    rng = random.Random(seed)
    rate = rng.choice([1, 5, 20, 100])
    limiter = ResponseRateLimiter(rate)
    now_s, start_s, sent = 1000.0, 1000.0, 0
    try:
        for case in range(20_000):
            now_s += rng.expovariate(rate * rng.choice([0.5, 2, 10]))  # below and above the rate
            verdict = limiter.verdict(f"198.51.100.{rng.randrange(256)}", now_s)
            sent += verdict is SEND
            assert sent <= rate + rate * (now_s - start_s) + 1e-6, (case, sent)
        assert sent >= rate * (now_s - start_s) * 0.3, "the limit let too little through"
    except AssertionError as exc:
        raise AssertionError(f"seed {seed} rate {rate}: {exc}\nreplay: "
                             + REPLAY.format(seed=seed)) from exc


def test_slip_2_truncates_exactly_every_second_response_over_the_limit() -> None:
    limiter = ResponseRateLimiter(3)
    assert verdicts(limiter, "192.0.2.1", 3, 0.0) == [SEND] * 3
    assert verdicts(limiter, "192.0.2.1", 8, 0.0) == [DROP, SLIP] * 4
    assert limiter.verdict("192.0.2.1", 1.0) is SEND          # refilled: answered again
    over = verdicts(limiter, "192.0.2.1", 20, 1.0)[2:]          # 2 more tokens, then over
    assert over == [DROP, SLIP] * 9


def test_other_slip_settings() -> None:
    limiter = ResponseRateLimiter(1, slip=3)
    assert verdicts(limiter, "192.0.2.1", 7, 0.0) == [SEND, DROP, DROP, SLIP, DROP, DROP, SLIP]
    every = ResponseRateLimiter(1, slip=1)
    assert verdicts(every, "192.0.2.1", 4, 0.0) == [SEND, SLIP, SLIP, SLIP]


def test_an_ipv4_slash_24_shares_one_bucket() -> None:
    limiter = ResponseRateLimiter(4)
    assert [limiter.verdict(f"192.0.2.{i}", 0.0) for i in (1, 2, 200, 255)] == [SEND] * 4
    assert limiter.verdict("192.0.2.77", 0.0) is not SEND
    assert limiter.verdict("::ffff:192.0.2.9", 0.0) is not SEND   # dual-stack view of the same
    assert limiter.verdict("192.0.3.1", 0.0) is SEND              # the next /24
    assert len(limiter) == 2


def test_an_ipv6_slash_56_shares_one_bucket() -> None:
    limiter = ResponseRateLimiter(3)
    same = ["2001:db8:0:1::1", "2001:db8:0:ff:ffff::1", "2001:db8::1"]
    assert [limiter.verdict(a, 0.0) for a in same] == [SEND] * 3
    assert limiter.verdict("2001:db8:0:42::9", 0.0) is not SEND
    assert limiter.verdict("2001:db8:0:100::1", 0.0) is SEND      # the next /56
    assert network_key("2001:db8:0:ff::1") == "2001:db8::/56"
    assert network_key("192.0.2.99") == "192.0.2.0/24"
    assert network_key("::ffff:192.0.2.99") == "192.0.2.0/24"
    assert network_key("not an address") is None


def test_trusted_sources_are_never_limited_and_take_no_tokens() -> None:
    limiter = ResponseRateLimiter(2, TrustedSources(("192.0.2.0/25", "::1/128")))
    assert verdicts(limiter, "192.0.2.5", 1000, 0.0) == [SEND] * 1000
    assert verdicts(limiter, "::1", 1000, 0.0) == [SEND] * 1000
    # 192.0.2.200 is in the same /24 but not trusted: its bucket is still full.
    assert verdicts(limiter, "192.0.2.200", 4, 0.0) == [SEND, SEND, DROP, SLIP]


def test_memory_is_bounded() -> None:
    limiter = ResponseRateLimiter(2, max_networks=8, max_sources=16)
    for i in range(1000):
        for host in (1, 2, 3):
            limiter.verdict(f"10.{i // 256}.{i % 256}.{host}", 0.0)
        assert len(limiter) <= 8 and len(limiter._sources) <= 16


def test_a_forgotten_network_starts_full() -> None:
    limiter = ResponseRateLimiter(2, max_networks=8)
    assert verdicts(limiter, "192.0.2.1", 3, 0.0) == [SEND, SEND, DROP]
    for i in range(100):
        limiter.verdict(f"10.0.{i}.1", 0.0)
    assert len(limiter) == 8
    # 192.0.2.0/24 was forgotten: its remembered source finds a new, full bucket...
    assert verdicts(limiter, "192.0.2.1", 3, 0.0) == [SEND, SEND, DROP]
    assert verdicts(limiter, "192.0.2.2", 1, 0.0) == [SLIP]      # ...which the /24 shares
    assert len(limiter) == 8


def test_a_clock_that_steps_back_refills_nothing() -> None:
    limiter = ResponseRateLimiter(2)
    assert verdicts(limiter, "192.0.2.1", 3, 10.0) == [SEND, SEND, DROP]
    assert verdicts(limiter, "192.0.2.1", 2, 5.0) == [SLIP, DROP]
    assert limiter.verdict("192.0.2.1", 10.5) is SEND


def test_a_rate_of_zero_is_no_limiter() -> None:
    with pytest.raises(ValueError):
        ResponseRateLimiter(0)


# --- the slip --------------------------------------------------------------------------------

def test_the_slip_is_a_truncated_reply_no_larger_than_the_query() -> None:
    query = dns.message.make_query("laptop.mydns.", "AAAA", use_edns=0)
    wire = query.to_wire()
    data = truncated_reply(wire)
    assert data is not None and len(data) <= len(wire)
    reply = dns.message.from_wire(data)
    assert query.is_response(reply) and reply.id == query.id
    assert reply.flags & dns.flags.TC and reply.flags & dns.flags.QR
    assert reply.flags & dns.flags.RD and not reply.flags & dns.flags.AA
    assert reply.rcode() == dns.rcode.NOERROR and not reply.answer and not reply.authority
    assert reply.question == query.question


@pytest.mark.parametrize("packet", [
    b"", b"\x12\x34\x01\x00\x00\x01",                                # shorter than a header
    b"\x12\x34\x81\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01a\x00\x00\x01\x00\x01",   # a response
    b"\x12\x34\x01\x00\x00\x02\x00\x00\x00\x00\x00\x00\x01a\x00\x00\x01\x00\x01",   # 2 questions
    b"\x12\x34\x10\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01a\x00\x00\x01\x00\x01",   # STATUS
    b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x05ab",        # name runs off the end
    b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01a\x00\x00",  # no class
    b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x50" + b"a" * 90,  # label over 63
], ids=["empty", "short", "response", "two-questions", "opcode", "name", "class", "label"])
def test_no_slip_for_what_is_no_query(packet: bytes) -> None:
    assert truncated_reply(packet) is None


# --- the front end ---------------------------------------------------------------------------

class SilentCluster:
    async def call(self, op, timeout_s):
        raise AssertionError("cache mode answers without the cluster")


def service(rrl: int, trusted: tuple[str, ...] = ()) -> DnsService:
    cache = RecordCache()
    cache.apply((), serial=1, full=False)
    settings = FrontEndSettings(servers=(1,), rrl=rrl, trusted=trusted)
    return DnsService(SilentCluster(), settings, cache, FrontEndCounters())  # type: ignore[arg-type]


def test_the_front_end_drops_and_slips_over_the_limit() -> None:
    front = service(rrl=5)
    query = dns.message.make_query("x.mydns.", "A").to_wire()
    results = [front.rate_limited(query, "192.0.2.1") for _ in range(25)]
    # Monotonic time passes while this runs, so a token or two may come back.
    assert results[:5] == [None] * 5 and results.count(None) <= 7
    over = [r for r in results if r is not None]
    drops = [r for r in over if isinstance(r, Drop)]
    slips = [r for r in over if isinstance(r, Answer)]
    assert abs(len(drops) - len(slips)) <= 1 and len(drops) + len(slips) == len(over)
    assert all(dns.message.from_wire(s.data).flags & dns.flags.TC for s in slips)
    counters = front.counters
    assert (counters.rrl_dropped, counters.rrl_slipped) == (len(drops), len(slips))
    assert front.rate_limited(query, "192.0.3.1") is None            # another network


def test_cached_answers_in_a_socket_batch_meet_the_limit_once_each() -> None:
    """The socket loop's fast path (:meth:`DnsService.answer_from_cache`)
    takes one token per datagram, as the usual path does, and counts each
    datagram once."""
    front = service(rrl=5)
    udp = UdpFrontEnd(None, front)  # type: ignore[arg-type]
    udp.server = server = RecordingServer()  # type: ignore[assignment]
    query = dns.message.make_query("x.mydns.", "A").to_wire()
    udp.datagrams_received([(query, ("192.0.3.1", 53))])  # another network: learnt, answered
    udp.datagrams_received([(query, ("192.0.2.1", port)) for port in range(25)])
    to_limited = [data for data, addr in server.sent if addr[0] == "192.0.2.1"]
    full = [data for data in to_limited if not dns.message.from_wire(data).flags & dns.flags.TC]
    slips = len(to_limited) - len(full)
    counters = front.counters
    assert server.sent_many > 5, "answered from the cache, in one batch"
    assert 5 <= len(full) <= 7 and slips == counters.rrl_slipped
    assert len(full) + counters.rrl_slipped + counters.rrl_dropped == 25
    assert counters.requests_received == 26
    assert counters.replies_sent == 1 + len(to_limited)


@pytest.mark.parametrize("rrl, trusted", [(0, ()), (5, ("192.0.2.0/24",))])
def test_no_limit_when_off_or_trusted(rrl: int, trusted: tuple[str, ...]) -> None:
    front = service(rrl, trusted)
    query = dns.message.make_query("x.mydns.", "A").to_wire()
    assert all(front.rate_limited(query, "192.0.2.1") is None for _ in range(1000))
    assert front.counters.rrl_dropped == front.counters.rrl_slipped == 0


# --- a real lab ------------------------------------------------------------------------------

RATE = 20
BURST = 200


@pytest.mark.lab
def test_a_udp_flood_is_limited_and_tcp_is_always_answered(tmp_path) -> None:
    """Loopback is not trusted here (--trusted 10.0.0.0/8), so the front
    end limits the test's own UDP queries to --rrl 20 a second."""
    with LabProcess(tmp_path / "data", "--trusted", "10.0.0.0/8", "--rrl", str(RATE),
                    nservers=3, nclerks=1, seed=7) as lab:
        where = f"(lab: {lab.replay}; log {lab.log_path})"
        server = lab.servers()[0]
        queries = [dns.message.make_query("mydns.", "SOA") for _ in range(BURST)]
        for i, query in enumerate(queries):
            query.id = i
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.connect(server)
            started = time.monotonic()
            for query in queries:
                sock.send(query.to_wire())
            answered, slipped, last_s = 0, 0, started
            sock.settimeout(0.5)        # a quiet half second ends the count
            deadline = started + 10
            while time.monotonic() < deadline:
                try:
                    data = sock.recv(4096)
                except socket.timeout:
                    break
                last_s = time.monotonic()
                reply = dns.message.from_wire(data)
                assert queries[reply.id].is_response(reply), where
                if reply.flags & dns.flags.TC:
                    assert not reply.answer and not reply.authority, where
                    slipped += 1
                else:
                    assert reply.answer, where
                    answered += 1
        elapsed_s = last_s - started
        allowed = RATE + RATE * elapsed_s + 1
        dropped = BURST - answered - slipped
        summary = (f"{answered} answered, {slipped} slipped, {dropped} dropped of {BURST} "
                   f"in {elapsed_s:.3f} s {where}")
        print(summary)
        assert 1 <= answered <= allowed, summary
        # Slip 2: every second response over the limit comes back truncated.
        assert slipped >= 1 and dropped >= slipped - 1, summary
        assert slipped >= 0.4 * (BURST - answered), summary
        # Over TCP nothing is limited: every query is answered in full.
        with socket.create_connection(server, timeout=5) as tcp:
            for i in range(BURST):
                query = dns.message.make_query("mydns.", "SOA")
                dns.query.send_tcp(tcp, query)
                reply, _ = dns.query.receive_tcp(tcp, expiration=time.time() + 5)
                assert query.is_response(reply) and not reply.flags & dns.flags.TC, where
                assert reply.answer, where
        # The UDP limit is per second, not a ban: after the refill, answered again.
        wait_for(lambda: udp_answered(server), 5, f"a UDP answer after the flood {where}")


def udp_answered(server: tuple[str, int]) -> bool:
    try:
        reply = dns.query.udp(dns.message.make_query("mydns.", "SOA"), server[0],
                              port=server[1], timeout=0.5)
    except dns.exception.Timeout:
        return False
    return not reply.flags & dns.flags.TC and bool(reply.answer)
