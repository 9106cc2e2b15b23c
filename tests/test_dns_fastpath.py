"""The response cache (:mod:`mydns_lab.dns.cache`), the fast path of
:meth:`DnsFrontEnd.handle`: its answers are byte for byte the full path's,
it forgets everything when the view's serial changes, it keeps the asker's
case, and anything unusual goes through the full path.

The full path is a fresh :class:`DnsFrontEnd` on the same view: it has
learnt nothing, so it answers every request the long way. The random part
is seeded; a failure prints the seed and the command that replays it.
"""

from __future__ import annotations

import os
import random
import struct
from dataclasses import replace

import pytest

from mydns_lab.dns.answers import Answer, DnsFrontEnd, UpdateNeeded
from mydns_lab.dns.cache import ResponseCache
from mydns_lab.dns.nameservers import NameServer
from mydns_lab.net.recordcopy import RecordCache
from mydns_lab.protocol import Record
from mydns_lab.service.dnsfront import DnsService, UdpFrontEnd
from mydns_lab.service.settings import FrontEndCounters, FrontEndSettings
from tests.test_dnsfront import GPU, KEYS, LAPTOP, NOW, SubtreeMemoryView, add, sign, update, wire
from tests.test_udp_server import RecordingServer

REPLAY = ("MYDNS_FUZZ_SEED={seed} .venv/bin/python -m pytest tests/test_dns_fastpath.py "
          "-k 'identical or batch'")
SEEDS = [int(os.environ["MYDNS_FUZZ_SEED"])] if "MYDNS_FUZZ_SEED" in os.environ else [1, 2, 3]
QUERIES_PER_SEED = 3000
F_RD, F_AD, F_CD = 0x0100, 0x0020, 0x0010
T_A, T_NS, T_SOA, T_MX, T_TXT, T_AAAA, T_ANY = 1, 2, 6, 15, 16, 28, 255


def opt_rr(payload: int = 1232, version: int = 0, do: bool = False,
           options: bytes = b"") -> bytes:
    ttl = (version << 16) | (0x8000 if do else 0)
    return b"\0" + struct.pack("!HHIH", 41, payload, ttl, len(options)) + options


def query(name: str, qtype: int = T_A, *, ident: int = 0x1234, flags: int = F_RD,
          qclass: int = 1, opt: bytes | None = None) -> bytes:
    header = struct.pack("!6H", ident, flags, 1, 0, 0, 0 if opt is None else 1)
    return header + wire(name) + struct.pack("!HH", qtype, qclass) + (opt or b"")


def view() -> SubtreeMemoryView:
    # The most a name may hold, and long stored texts: its TXT answer needs EDNS or TCP.
    many = Record("many", tuple(f"192.0.2.{i}" for i in range(1, 9)),
                  tuple(f"2001:db8::{i:x}" for i in range(1, 9)),
                  tuple(f"{i}" * 200 for i in range(3)), owner=GPU.owner, seq=1)
    return SubtreeMemoryView({"laptop": LAPTOP, "gpu1.lab": GPU, "many": many})


def full_path(records: SubtreeMemoryView, packet: bytes, tcp: bool = False,
              name_servers: tuple[NameServer, ...] = ()) -> bytes:
    fe = (DnsFrontEnd(view=records, keyring=KEYS, name_servers=name_servers) if name_servers
          else DnsFrontEnd(view=records, keyring=KEYS))
    reply = fe.handle(packet, tcp=tcp, now_s=NOW)
    assert isinstance(reply, Answer), reply
    return reply.data


def fast(fe: DnsFrontEnd, packet: bytes, tcp: bool = False) -> bytes | None:
    """The cache's answer alone, without falling back."""
    hit = fe.responses.reply(packet, tcp, fe.view)
    return None if hit is None else hit[0]


def answer(fe: DnsFrontEnd, packet: bytes, tcp: bool = False) -> bytes:
    reply = fe.handle(packet, tcp=tcp, now_s=NOW)
    assert isinstance(reply, Answer), reply
    return reply.data


def random_case(name: str, rng: random.Random) -> str:
    return "".join(c.upper() if rng.random() < 0.5 else c for c in name)


NAMES = ["laptop.mydns.", "gpu1.lab.mydns.", "lab.mydns.", "many.mydns.", "nobody.mydns.",
         "mydns.", "laptop.example.", "a-b.c.mydns.", "x.gpu1.lab.mydns.", "ns1.mydns.",
         "b.ns.mydns.", "ns.mydns."]
NAME_SERVERS = (tuple(NameServer(f"ns{k}", (f"192.0.2.{50 + k}",), (f"2001:db8::{50 + k:x}",))
                      for k in range(1, 12)) + (NameServer("b.ns", (), ("2001:db8::53",)),))
"""Twelve, so an NS answer with every address fits 1232 bytes but not 512 or 600."""
QTYPES = [T_A, T_AAAA, T_TXT, T_SOA, T_NS, T_MX, 99]


OPTS = [opt_rr(4096, do=True), opt_rr(512), opt_rr(600), opt_rr(100), opt_rr(1232, version=1),
        opt_rr(options=b"\0\x0a\0\x08" + b"c" * 8)]


def random_query(rng: random.Random) -> bytes:
    """Mostly what resolvers send (so the cache has something to serve),
    with every variation the key must tell apart now and then."""
    name = rng.choice(NAMES)
    if rng.random() < 0.2:
        name = random_case(name, rng)
    flags = F_RD if rng.random() < 0.8 else rng.choice([0, F_RD | F_AD, F_RD | F_CD, F_AD])
    roll = rng.random()
    opt = None if roll < 0.5 else opt_rr() if roll < 0.8 else rng.choice(OPTS)
    qclass = 1 if rng.random() < 0.9 else rng.choice([3, 255])
    return query(name, rng.choice(QTYPES), ident=rng.randrange(1 << 16), flags=flags,
                 qclass=qclass, opt=opt)


@pytest.mark.parametrize("seed", SEEDS)
def test_fast_path_is_byte_identical_to_the_full_path(seed: int) -> None:
    rng = random.Random(seed)
    records = view()
    fe = DnsFrontEnd(view=records, keyring=KEYS, name_servers=NAME_SERVERS)
    served = 0
    for case in range(QUERIES_PER_SEED):
        packet = random_query(rng)
        tcp = rng.random() < 0.1
        try:
            if case % 1000 == 999:  # a change: everything learnt so far is stale
                records.put(Record("laptop", (f"203.0.113.{case % 250}",), owner=LAPTOP.owner))
            expected = full_path(records, packet, tcp, NAME_SERVERS)
            cached = fast(fe, packet, tcp)
            served += cached is not None
            assert cached in (None, expected)
            assert answer(fe, packet, tcp) == expected
        except AssertionError as exc:
            raise AssertionError(f"seed {seed} case {case} packet {packet.hex()} tcp={tcp}: "
                                 f"{exc}\nreplay: " + REPLAY.format(seed=seed)) from exc
    assert served > QUERIES_PER_SEED // 5, f"only {served} answers came from the cache"


class NoCluster:
    async def call(self, op, timeout_s):
        raise AssertionError("cache mode answers without the cluster")


@pytest.mark.parametrize("seed", SEEDS)
def test_the_socket_batch_path_sends_what_the_full_path_answers(seed: int) -> None:
    """The front end's UDP side, fed as its socket loop feeds it (batches of
    1 to 64 datagrams): every reply is the full path's, byte for byte, and
    each datagram is counted once, however it was answered."""
    rng = random.Random(seed)
    records = RecordCache()
    records.apply((LAPTOP, GPU, *view().records.values()), serial=1, full=True)
    settings = FrontEndSettings(servers=(1,), name_servers=NAME_SERVERS, rrl=0)
    counters = FrontEndCounters()
    udp = UdpFrontEnd(None, DnsService(NoCluster(), settings, records, counters))  # type: ignore
    udp.server = server = RecordingServer()  # type: ignore[assignment]
    full = DnsFrontEnd(settings.zone, settings.ttl, view=records, name_servers=NAME_SERVERS)
    sent = 0
    for batch_number in range(QUERIES_PER_SEED // 32):
        if batch_number % 30 == 29:  # a change: everything learnt so far is stale
            records.apply((replace(LAPTOP, ipv4=(f"203.0.113.{batch_number % 250}",)),),
                          serial=records.serial + 1, full=False)
        batch = [(random_query(rng), ("192.0.2.1", sent + i)) for i in range(rng.randint(1, 64))]
        expected = {addr: full.handle(data, tcp=False, now_s=NOW) for data, addr in batch}
        full.responses = ResponseCache()  # the full path learns nothing, so serves nothing
        udp.datagrams_received(batch)
        sent += len(batch)
        try:
            assert sorted(addr for _, addr in server.sent) == sorted(expected)
            for data, addr in server.sent:
                reply = expected[addr]
                assert isinstance(reply, Answer) and data == reply.data, addr
        except AssertionError as exc:
            raise AssertionError(f"seed {seed} batch {batch_number}: {exc}\nreplay: "
                                 + REPLAY.format(seed=seed)) from exc
        server.sent.clear()
    assert counters.requests_received == counters.replies_sent == sent
    assert server.sent_many > sent // 5, f"only {server.sent_many} answers came from the cache"


def test_a_repeated_query_is_served_from_the_cache_with_its_own_id() -> None:
    fe = DnsFrontEnd(view=view(), keyring=KEYS)
    assert fast(fe, query("laptop.mydns.", ident=1)) is None
    first = answer(fe, query("laptop.mydns.", ident=1))
    again = fast(fe, query("laptop.mydns.", ident=0xBEEF))
    assert again is not None and again[:2] == b"\xbe\xef" and again[2:] == first[2:]
    assert len(fe.responses) == 1


def test_a_change_of_serial_forgets_everything() -> None:
    records = view()
    fe = DnsFrontEnd(view=records, keyring=KEYS)
    answer(fe, query("laptop.mydns."))
    assert fast(fe, query("laptop.mydns.")) is not None
    records.put(Record("laptop", ("203.0.113.9",), owner=LAPTOP.owner))
    assert fast(fe, query("laptop.mydns.")) is None and len(fe.responses) == 0
    assert answer(fe, query("laptop.mydns.")) == full_path(records, query("laptop.mydns."))
    assert bytes([203, 0, 113, 9]) in answer(fe, query("laptop.mydns."))


def test_another_view_is_never_answered_from_the_cache() -> None:
    cache, first, second = ResponseCache(), view(), view()
    packet = query("laptop.mydns.")
    cache.learn(packet, False, first, full_path(first, packet))
    assert cache.reply(packet, False, first) is not None
    assert cache.reply(packet, False, second) is None


def test_a_read_through_view_bypasses_the_cache() -> None:
    records = view()
    fe = DnsFrontEnd(view=records, keyring=KEYS)
    answer(fe, query("laptop.mydns."))
    moved = SubtreeMemoryView({"laptop": Record("laptop", ("203.0.113.7",), owner=LAPTOP.owner)},
                              serial=records.serial)
    reply = fe.handle_with_view(query("laptop.mydns."), moved, tcp=False, now_s=NOW)
    assert isinstance(reply, Answer) and bytes([203, 0, 113, 7]) in reply.data
    assert fast(fe, query("laptop.mydns.")) is not None  # the cache still holds the view's answer


@pytest.mark.parametrize("asked", ["LaPtOp.MyDnS.", "LAPTOP.MYDNS.", "laptop.MYDNS."])
def test_a_positive_answer_keeps_the_askers_case(asked: str) -> None:
    records = view()
    fe = DnsFrontEnd(view=records, keyring=KEYS)
    answer(fe, query("laptop.mydns.", opt=opt_rr()))
    packet = query(asked, opt=opt_rr(), ident=77)
    cached = fast(fe, packet)
    assert cached is not None, "a case variant of a positive answer is served from the cache"
    assert cached == full_path(records, packet)
    assert cached[12:12 + len(wire(asked))] == wire(asked)


@pytest.mark.parametrize("name,qtype", [("NoBody.mydns.", T_A), ("LAPTOP.MYDNS.", T_MX),
                                        ("MyDnS.", T_SOA), ("MYDNS.", T_NS)])
def test_answers_whose_compression_depends_on_case_need_the_same_case(name: str,
                                                                      qtype: int) -> None:
    records = view()
    fe = DnsFrontEnd(view=records, keyring=KEYS)
    answer(fe, query(name.lower(), qtype))
    packet = query(name, qtype)
    assert fast(fe, packet) is None
    assert answer(fe, packet) == full_path(records, packet)
    assert fast(fe, packet) == full_path(records, packet)  # now learnt in this case


def unusual_requests() -> list[tuple[str, bytes, bool]]:
    plain = query("laptop.mydns.")
    two_questions = (struct.pack("!6H", 9, F_RD, 2, 0, 0, 0)
                     + (wire("laptop.mydns.") + struct.pack("!HH", T_A, 1)) * 2)
    compressed = (struct.pack("!6H", 9, F_RD, 1, 0, 0, 0) + b"\x06laptop\xc0\x0c"
                  + struct.pack("!HH", T_A, 1))
    signed, _mac = sign(plain)
    response = plain[:2] + struct.pack("!H", 0x8100) + plain[4:]
    return [
        ("TSIG-signed query", signed, False),
        ("EDNS option (cookie)", query("laptop.mydns.", opt=opt_rr(options=b"\0\x0a\0\x08"
                                                                     + b"c" * 8)), False),
        ("EDNS version 1", query("laptop.mydns.", opt=opt_rr(version=1)), False),
        ("ANY", query("laptop.mydns.", T_ANY), False),
        ("AXFR over TCP", query("mydns.", 252), True),
        ("two questions", two_questions, False),
        ("compressed question name", compressed, False),
        ("trailing byte", plain + b"\0", False),
        ("truncated answer", query("many.mydns.", T_TXT), False),
        ("a response", response, False),
    ]


def test_the_truncated_case_is_truncated() -> None:
    """The "truncated answer" request above does come back with TC set."""
    data = answer(DnsFrontEnd(view=view(), keyring=KEYS), query("many.mydns.", T_TXT))
    assert struct.unpack_from("!H", data, 2)[0] & 0x0200 and len(data) <= 512


@pytest.mark.parametrize("what,packet,tcp", unusual_requests(),
                         ids=[u[0] for u in unusual_requests()])
def test_unusual_requests_always_take_the_full_path(what: str, packet: bytes, tcp: bool) -> None:
    records = view()
    fe = DnsFrontEnd(view=records, keyring=KEYS)
    first = fe.handle(packet, tcp=tcp, now_s=NOW)
    second = fe.handle(packet, tcp=tcp, now_s=NOW)
    assert fast(fe, packet, tcp) is None and len(fe.responses) == 0, what
    assert first == second == DnsFrontEnd(view=records, keyring=KEYS).handle(
        packet, tcp=tcp, now_s=NOW)


def test_a_signed_update_is_never_cached() -> None:
    records = view()
    fe = DnsFrontEnd(view=records, keyring=KEYS)
    packet, _mac = sign(update(updates=[add("laptop.mydns.", "192.0.2.9")]))
    assert isinstance(fe.handle(packet, tcp=False, now_s=NOW), UpdateNeeded)
    assert len(fe.responses) == 0


def test_the_cache_keeps_at_most_max_entries_per_transport() -> None:
    records = view()
    fe = DnsFrontEnd(view=records, keyring=KEYS)
    fe.responses = ResponseCache(max_entries=4)
    for i in range(10):
        answer(fe, query(f"name{i}.mydns."))
        answer(fe, query(f"name{i}.mydns."), tcp=True)
    assert len(fe.responses) == 8
    assert fast(fe, query("name9.mydns.")) is not None
    assert fast(fe, query("name0.mydns.")) is None


def test_dns_ids_starting_with_a_brace_are_not_json() -> None:
    is_json = UdpFrontEnd._is_json
    assert is_json(b'{"Type":"Query","Key":"laptop"}')
    assert not is_json(query("laptop.mydns.", ident=0x7B22))
    assert not is_json(b"\x00\x01" + b"{}")
