"""Hostile and broken packets: :meth:`DnsFrontEnd.handle` must return (never
raise, never hang) and stay correct for the next valid request.

The random part is seeded. A failure prints its seed and the command that
replays it; ``MYDNS_FUZZ_SEED=<n>`` runs that seed alone.
"""

from __future__ import annotations

import os
import random
import struct

import pytest
from dnslib import EDNS0, DNSRecord
from dnslib.label import DNSLabelError

from mydns_lab.dns import answers as dnsfront
from mydns_lab.dns.answers import Answer, DnsFrontEnd, Drop, UpdateNeeded
from mydns_lab.dns.wire import parse_message
from tests.test_dnsfront import (FORMERR, KEYS, LAPTOP, NOERROR, NOW, NXDOMAIN, REFUSED, SERVFAIL,
                                 MemoryView, add, delete_name, delete_rr, exists, front, sign,
                                 update)

HEADER_QUERY = struct.pack("!6H", 0x5151, 0x0100, 1, 0, 0, 0)
REPLAY = "MYDNS_FUZZ_SEED={seed} .venv/bin/python -m pytest tests/test_malformed.py -k mutations"


def reply_to(fe: DnsFrontEnd, packet: bytes, tcp: bool = False) -> object:
    return fe.handle(packet, tcp=tcp, now_s=NOW)


def rcode(fe: DnsFrontEnd, packet: bytes) -> int:
    reply = reply_to(fe, packet)
    assert isinstance(reply, Answer), reply
    assert reply.data[:2] == packet[:2], "the reply does not carry the request's id"
    return reply.data[3] & 0xF


def valid_query_still_answered(fe: DnsFrontEnd) -> None:
    q = DNSRecord.question("laptop.mydns.")
    reply = reply_to(fe, q.pack())
    r = DNSRecord.parse(reply.data)
    assert r.header.rcode == NOERROR and [str(rr.rdata) for rr in r.rr] == list(LAPTOP.ipv4)


def question_packet(name_wire: bytes, qtype: int = 1) -> bytes:
    return HEADER_QUERY + name_wire + struct.pack("!HH", qtype, 1)


# --- compression pointers ------------------------------------------------------------


@pytest.mark.parametrize("name_wire", [
    b"\xc0\x0c",                    # points at itself
    b"\xc0\x0e\xc0\x0c",            # forward to a pointer back to the first
    b"\x01a\xc0\x0c",               # a label, then back to its own start
    b"\xc0\x20",                    # forward, past the end
    b"\xc0",                        # cut in half
    b"\xff\xff",                    # pointer to 0x3fff
])
def test_pointer_loops_and_bad_pointers(name_wire: bytes) -> None:
    fe = front()
    assert rcode(fe, question_packet(name_wire)) == FORMERR
    valid_query_still_answered(fe)


def pointer_chain(hops: int) -> bytes:
    """A query whose additional record's owner name is a chain of ``hops``
    compression pointers, each pointing at the one before (all backwards,
    so only a hop limit or recursion depth stops a reader)."""
    question = b"\x06laptop\x05mydns\x00" + struct.pack("!HH", 1, 1)
    blob_start = 12 + len(question) + 11  # after the question and the blob RR's header
    chain = bytearray(b"\x00")            # the chain ends at a root label
    for i in range(hops):
        target = blob_start + (0 if i == 0 else 1 + 2 * (i - 1))
        chain += struct.pack("!H", 0xC000 | target)
    blob_rr = b"\x00" + struct.pack("!HHIH", 65280, 1, 0, len(chain)) + bytes(chain)
    last = blob_start + 1 + 2 * (hops - 1)
    chained_rr = struct.pack("!H", 0xC000 | last) + struct.pack("!HHIH", 65280, 1, 0, 1) + b"x"
    header = struct.pack("!6H", 0x7777, 0x0100, 1, 0, 0, 2)
    return header + question + blob_rr + chained_rr


def test_1500_hop_pointer_chain() -> None:
    packet = pointer_chain(1500)
    with pytest.raises(RecursionError):  # why the front end does not use dnslib's parser
        DNSRecord.parse(packet)
    fe = front()
    assert rcode(fe, packet) == FORMERR
    valid_query_still_answered(fe)


def test_short_pointer_chain_is_fine() -> None:
    assert rcode(front(), pointer_chain(5)) == NOERROR


# --- labels and names -------------------------------------------------------------------


def labels_wire(*labels: bytes) -> bytes:
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\0"


def test_labels_over_63_octets() -> None:
    fe = front()
    for length_byte in (64, 0x7F, 0x80, 0xBF):  # 0x40 and 0x80 label types
        assert rcode(fe, question_packet(bytes([length_byte]) + b"a" * 70 + b"\0")) == FORMERR
    assert rcode(fe, question_packet(labels_wire(b"a" * 63, b"mydns"))) == NXDOMAIN


def test_names_over_255_octets() -> None:
    fe = front()
    exactly_255 = labels_wire(b"a" * 63, b"b" * 63, b"c" * 63, b"d" * 55, b"mydns")
    assert len(exactly_255) == 255
    assert rcode(fe, question_packet(exactly_255)) == NXDOMAIN
    outside_255 = labels_wire(b"a" * 63, b"b" * 63, b"c" * 63, b"d" * 53, b"example")
    assert len(outside_255) == 255
    reply = DNSRecord.parse(reply_to(fe, question_packet(outside_255)).data)
    assert reply.header.rcode == REFUSED and len(reply.q.qname.label) == 5  # echoed whole
    assert rcode(fe, question_packet(labels_wire(b"e" + b"a" * 62, *[b"b" * 63] * 3, b"mydns"))) \
        == FORMERR
    # Over 255 only once a pointer is followed: the prefix plus the question's name.
    q = question_packet(labels_wire(b"a" * 63, b"b" * 63, b"c" * 63, b"mydns"))
    rr = labels_wire(b"z" * 63)[:-1] + b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 0, 4) + b"\1\2\3\4"
    packet = q[:10] + struct.pack("!H", 1) + q[12:] + rr
    assert rcode(fe, packet) == FORMERR
    valid_query_still_answered(fe)


def test_binary_labels_are_answered_not_crashed() -> None:
    fe = front()
    assert rcode(fe, question_packet(labels_wire(b"\xff\xfe\x00.", b"mydns"))) == NXDOMAIN
    assert rcode(fe, question_packet(labels_wire(b"\xff\xfe\x00.", b"com"))) == REFUSED


# --- truncation and counts -------------------------------------------------------------------


def sample_query() -> bytes:
    q = DNSRecord.question("laptop.mydns.", "AAAA")
    q.header.id = 0x2468
    q.add_ar(EDNS0(udp_len=1232))
    return bytes(q.pack())


def sample_update() -> bytes:
    packet = update(prereqs=[exists("laptop.mydns.")],
                    updates=[add("laptop.mydns.", "192.0.2.50"),
                             delete_rr("laptop.mydns.", "192.0.2.1"),
                             delete_name("old.laptop.mydns.")])
    return sign(packet)[0]


@pytest.mark.parametrize("make", [sample_query, sample_update])
def test_truncation_at_every_offset(make) -> None:
    packet = make()
    fe = front()
    assert not isinstance(reply_to(fe, packet), Drop)
    for cut in range(len(packet)):
        prefix = packet[:cut]
        reply = reply_to(fe, prefix)
        if cut < 12:
            assert reply == Drop(), f"cut at {cut}"
        else:
            assert isinstance(reply, Answer) and reply.data[3] & 0xF == FORMERR, f"cut at {cut}"
            assert reply.data[:2] == packet[:2]
    valid_query_still_answered(fe)


@pytest.mark.parametrize("counts", [(65535, 0, 0, 0), (1, 65535, 0, 0), (1, 0, 65535, 0),
                                    (1, 0, 0, 65535), (65535, 65535, 65535, 65535), (2, 0, 0, 0)])
def test_counts_far_beyond_the_data(counts: tuple[int, int, int, int]) -> None:
    packet = sample_query()
    fe = front()
    bad = packet[:4] + struct.pack("!4H", *counts) + packet[12:]
    assert rcode(fe, bad) == FORMERR
    valid_query_still_answered(fe)


def test_a_bug_inside_costs_servfail_not_an_exception(monkeypatch) -> None:
    def explode(*args, **kwargs):
        raise DNSLabelError("label too long")
    fe = front()
    packet = DNSRecord.question("laptop.mydns.").pack()
    monkeypatch.setattr(dnsfront, "_pack_body", explode)
    assert rcode(fe, packet) == SERVFAIL
    reply = reply_to(fe, sign(update(updates=[add("laptop.mydns.", "192.0.2.9")]))[0])
    assert isinstance(reply, UpdateNeeded)
    assert reply.finish([("ok", "")])[3] & 0xF == SERVFAIL
    def too_deep(data: bytes) -> None:
        raise RecursionError("maximum recursion depth exceeded")
    monkeypatch.setattr(dnsfront, "parse_message", too_deep)
    assert rcode(fe, packet) == FORMERR


# --- seeded random mutations -------------------------------------------------------------------


def mutate(packet: bytes, rng: random.Random) -> bytes:
    data = bytearray(packet)
    for _ in range(rng.choice((1, 1, 1, 2, 3, 4))):
        choice = rng.randrange(7)
        where = rng.randrange(len(data) + 1)
        if choice == 0 and data:        # flip a bit
            data[where % len(data)] ^= 1 << rng.randrange(8)
        elif choice == 1:               # insert a byte
            data.insert(where, rng.randrange(256))
        elif choice == 2 and data:      # delete a byte
            del data[where % len(data)]
        elif choice == 3 and data:      # overwrite a byte
            data[where % len(data)] = rng.randrange(256)
        elif choice == 4 and len(data) >= 12:  # a count field
            field = 4 + 2 * rng.randrange(4)
            data[field:field + 2] = struct.pack("!H", rng.choice([0, 1, 2, 255, 65535]))
        elif choice == 5:               # a compression pointer somewhere
            data[where:where] = struct.pack("!H", 0xC000 | rng.randrange(len(data) + 16))
        elif choice == 6:               # cut
            del data[where:]
    return bytes(data)


def check_reply(fe: DnsFrontEnd, packet: bytes, tcp: bool) -> None:
    reply = fe.handle(packet, tcp=tcp, now_s=NOW)
    if isinstance(reply, UpdateNeeded):
        data = reply.finish([("ok", "")] * len(reply.ops))
    elif isinstance(reply, Answer):
        data = reply.data
    else:
        assert reply == Drop()
        return
    assert len(data) >= 12 and data[:2] == packet[:2] and data[2] & 0x80
    assert tcp or len(data) <= dnsfront.UDP_PAYLOAD_MAX
    # Every reply is well formed. (Not dnslib's parser: it refuses the
    # non-UTF-8 labels a reply may echo from the question.)
    parse_message(data)


SEEDS = [int(os.environ["MYDNS_FUZZ_SEED"])] if "MYDNS_FUZZ_SEED" in os.environ else [1, 2, 3]
MUTATIONS_PER_SEED = 2000


@pytest.mark.parametrize("seed", SEEDS)
def test_seeded_mutations(seed: int) -> None:
    rng = random.Random(seed)
    view = MemoryView({"laptop": LAPTOP})
    fe = DnsFrontEnd(view=view, keyring=KEYS)
    corpus = [sample_query(), sample_update(), bytes(DNSRecord.question("mydns.", "SOA").pack()),
              bytes(DNSRecord.question("LaPtOp.mydns.", "ANY").pack()), pointer_chain(3)]
    for case in range(MUTATIONS_PER_SEED):
        packet = mutate(rng.choice(corpus), rng)
        tcp = rng.random() < 0.3
        try:
            check_reply(fe, packet, tcp)
            if case % 100 == 0:
                valid_query_still_answered(fe)
        except BaseException as exc:
            raise AssertionError(f"seed {seed} case {case} packet {packet.hex()} tcp={tcp}: "
                                 f"{type(exc).__name__}: {exc}\nreplay: "
                                 + REPLAY.format(seed=seed)) from exc
    valid_query_still_answered(fe)
    assert reply_to(fe, sample_update()) != Drop()
