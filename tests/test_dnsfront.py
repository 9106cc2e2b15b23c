"""The DNS front end's logic: queries, EDNS, truncation, TSIG and RFC 2136
updates, through :meth:`DnsFrontEnd.handle` with bytes built by dnslib (and
by dnspython when it is installed). No sockets, no clock: ``now_s`` is a
constant. TSIG requests here are signed by a small signer written
independently of the module, and fixed vectors made with dnspython 2.9.2
check both against the reference implementation."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import struct
from dataclasses import dataclass, field, replace

import pytest
from dnslib import AAAA, EDNS0, QTYPE, RD, RR, A, DNSHeader, DNSQuestion, DNSRecord

from mydns_lab.dns.answers import Answer, DnsFrontEnd, Drop, UpdateNeeded, _iso_utc, soa_serial
from mydns_lab.dns.nameservers import NameServer, default_name_servers, name_servers
from mydns_lab.dns.tsig import (KeyFileError, KeyRing, TsigKey, parse_tsig_rdata, tsig_digest,
                                tsig_owner)
from mydns_lab.dns.wire import Zone, parse_message
from mydns_lab.protocol import Record, RecordOp, Status
from mydns_lab.records import token_hash

NOW = 1_700_000_000
SECRET = b"k" * 32
SECRET_B64 = base64.b64encode(SECRET).decode()
OTHER_SECRET = b"o" * 32
KEYS = KeyRing([TsigKey("laptop", SECRET),
                TsigKey("lab-admin", OTHER_SECRET, ("gpu1.lab", "*.farm"))])
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
YXDOMAIN, YXRRSET, NXRRSET, NOTAUTH, NOTZONE = 6, 7, 8, 9, 10
BADSIG, BADKEY, BADTIME = 16, 17, 18


@dataclass
class MemoryView:
    records: dict[str, Record] = field(default_factory=dict)
    serial: int = 41

    def lookup(self, name: str) -> Record | None:
        return self.records.get(name)

    def put(self, record: Record) -> None:
        self.records[record.name] = record
        self.serial += 1


class SubtreeMemoryView(MemoryView):
    def has_descendants(self, name: str) -> bool:
        return any(n.endswith("." + name) for n in self.records)


LAPTOP = Record("laptop", ("192.0.2.1", "192.0.2.2"), ("2001:db8::1",), ("hello world",),
                owner=tsig_owner("laptop"), seq=7, updated_ms=1_700_000_000_123)
GPU = Record("gpu1.lab", ("198.51.100.7",), owner=token_hash("json-token"), seq=3)


def front(view: MemoryView | None = None, **kwargs) -> DnsFrontEnd:
    if view is None:
        view = MemoryView({"laptop": LAPTOP, "gpu1.lab": GPU})
    return DnsFrontEnd(view=view, keyring=KEYS, **kwargs)


def ask(fe: DnsFrontEnd, name: str, qtype: str | int = "A", *, edns: int | None = None,
        tcp: bool = False, do: bool = False, qclass: int = 1) -> DNSRecord:
    q = DNSRecord.question(name, qtype if isinstance(qtype, str) else QTYPE.get(qtype))
    q.q.qclass = qclass
    if edns is not None:
        q.add_ar(EDNS0(udp_len=edns, flags="do" if do else ""))
    reply = fe.handle(q.pack(), tcp=tcp, now_s=NOW)
    assert isinstance(reply, Answer), reply
    response = DNSRecord.parse(reply.data)
    assert response.header.id == q.header.id and response.header.qr == 1
    return response


def rdatas(response: DNSRecord, section: str = "rr") -> list[str]:
    return [str(rr.rdata) for rr in getattr(response, section)]


# --- queries -------------------------------------------------------------------------


def test_a_records_from_the_record() -> None:
    r = ask(front(), "laptop.mydns.")
    assert r.header.rcode == NOERROR and r.header.aa == 1 and r.header.rd == 1
    assert rdatas(r) == ["192.0.2.1", "192.0.2.2"]
    assert all(rr.ttl == 60 and rr.rtype == QTYPE.A for rr in r.rr)
    assert r.auth == [] and r.ar == []


def test_aaaa_records_and_ttl() -> None:
    r = ask(front(ttl=300), "laptop.mydns.", "AAAA")
    assert rdatas(r) == ["2001:db8::1"] and r.rr[0].ttl == 300


def test_txt_holds_update_time_and_stored_texts() -> None:
    r = ask(front(), "laptop.mydns.", "TXT")
    assert rdatas(r) == ['"updated=2023-11-14T22:13:20Z"', '"hello world"']


@pytest.mark.parametrize("ms", [0, 951_782_400_000, 1_709_164_799_999, 4_107_542_400_000,
                                1_700_000_000_123, 253_402_300_799_000])
def test_iso_time_matches_datetime(ms: int) -> None:
    expected = datetime.datetime.fromtimestamp(ms // 1000, datetime.timezone.utc)
    assert _iso_utc(ms) == expected.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_soa_at_the_apex() -> None:
    view = MemoryView({"laptop": LAPTOP}, serial=1234)
    r = ask(front(view, ttl=90), "mydns.", "SOA")
    assert r.header.aa == 1 and len(r.rr) == 1
    soa = r.rr[0].rdata
    assert str(soa.mname) == "ns1.mydns." and str(soa.rname) == "hostmaster.mydns."
    serial, refresh, retry, expire, minimum = soa.times
    assert serial == 1235 and minimum == 90 and refresh > retry > 0 and expire > refresh
    view.put(GPU)
    assert ask(front(view), "mydns.", "SOA").rr[0].rdata.times[0] == 1236


def test_soa_serial_is_at_least_one_and_rises_within_32_bits() -> None:
    empty = MemoryView(serial=0)
    assert ask(front(empty), "mydns.", "SOA").rr[0].rdata.times[0] == 1
    assert ask(front(empty), "nobody.mydns.").auth[0].rdata.times[0] == 1
    assert [soa_serial(s) for s in (0, 1, 2**32 - 2, 2**32 - 1, 2**32)] == [1, 2, 2**32 - 1, 1, 2]

    def increases(old: int, new: int) -> bool:  # RFC 1982 serial arithmetic, SERIAL_BITS 32
        return 0 < (new - old) % 2**32 < 2**31
    assert all(increases(soa_serial(s), soa_serial(s + 1)) and 1 <= soa_serial(s) < 2**32
               for s in (0, 7, 2**31, 2**32 - 3, 2**32 - 2, 2**32 - 1, 2**32, 5 * 2**32))


def test_ns_at_the_apex_default() -> None:
    r = ask(front(), "mydns.", "NS")
    assert rdatas(r) == ["ns1.mydns."] and r.header.aa == 1
    assert [(str(rr.rname), str(rr.rdata), rr.ttl) for rr in r.ar] == [
        ("ns1.mydns.", "127.0.0.1", 60)]


SERVERS = name_servers(Zone.of("mydns."), [("ns1", "192.0.2.53"), ("ns1", "2001:db8::53"),
                                           ("b.ns.mydns.", "198.51.100.53")])


def test_ns_set_in_order_with_addresses_in_the_additional_section() -> None:
    fe = front(name_servers=SERVERS, ttl=120)
    r = ask(fe, "MyDns.", "NS")
    assert rdatas(r) == ["ns1.mydns.", "b.ns.mydns."] and all(rr.ttl == 120 for rr in r.rr)
    assert str(r.rr[0].rname) == "MyDns."
    assert [(str(rr.rname), QTYPE[rr.rtype], str(rr.rdata)) for rr in r.ar] == [
        ("ns1.mydns.", "A", "192.0.2.53"), ("ns1.mydns.", "AAAA", "2001:db8::53"),
        ("b.ns.mydns.", "A", "198.51.100.53")]
    assert all(rr.ttl == 120 for rr in r.ar)
    assert str(ask(fe, "mydns.", "SOA").rr[0].rdata.mname) == "ns1.mydns."


def test_name_servers_resolve_in_the_zone_whatever_the_store_holds() -> None:
    claimed = Record("ns1", ("203.0.113.66",), ("2001:db8::66",), ("mine",), owner="x", seq=1)
    fe = front(MemoryView({"ns1": claimed, "laptop": LAPTOP}), name_servers=SERVERS)
    assert rdatas(ask(fe, "ns1.mydns.", "A")) == ["192.0.2.53"]
    assert rdatas(ask(fe, "NS1.mydns.", "AAAA")) == ["2001:db8::53"]
    assert rdatas(ask(fe, "b.ns.mydns.", "A")) == ["198.51.100.53"]
    for name, qtype in (("ns1.mydns.", "TXT"), ("b.ns.mydns.", "AAAA"), ("ns1.mydns.", "MX")):
        r = ask(fe, name, qtype)  # the name exists, without that type: NODATA
        assert (r.header.rcode, r.rr, [QTYPE[rr.rtype] for rr in r.auth]) == (NOERROR, [], ["SOA"])
    assert ask(fe, "ns.mydns.", "A").header.rcode == NOERROR  # an empty non-terminal
    assert ask(fe, "ns2.mydns.", "A").header.rcode == NXDOMAIN


def test_name_server_addresses_that_do_not_fit_are_left_out_not_truncated() -> None:
    many = default_name_servers("2001:db8::53", 20)
    full = ask(front(name_servers=many), "mydns.", "NS", tcp=True)
    assert len(full.rr) == 20 and len(full.ar) == 20
    plain = ask(front(name_servers=many), "mydns.", "NS")
    assert plain.header.tc == 0 and len(plain.rr) == 20 and 0 < len(plain.ar) < 20
    kept = len(plain.ar)  # the first ones, in order
    assert [str(rr.rname) for rr in plain.ar] == [f"ns{k}.mydns." for k in range(1, kept + 1)]
    assert len(plain.pack()) <= 512


def test_default_name_servers_one_per_front_end_at_the_bind_address() -> None:
    assert default_name_servers("192.0.2.1", 2) == (
        NameServer("ns1", ("192.0.2.1",)), NameServer("ns2", ("192.0.2.1",)))
    assert default_name_servers("::1", 1) == (NameServer("ns1", (), ("::1",)),)
    with pytest.raises(ValueError, match="--bind 0.0.0.0 listens on every address"):
        default_name_servers("0.0.0.0", 2)


@pytest.mark.parametrize("given, words", [
    ([("dns.example.net.", "192.0.2.1")], "must be inside the zone mydns."),
    ([("mydns.", "192.0.2.1")], "below its apex"),
    ([("a_b", "192.0.2.1")], "not a name"),
    ([("ns1", "ns1.example")], "expected an IPv4 or IPv6 address"),
    ([("ns1", "::")], "is no address a resolver can be sent to"),
    ([("ns1", "192.0.2.1"), ("NS1.mydns.", "192.0.2.1")], "given twice"),
])
def test_bad_name_servers_say_which(given: list[tuple[str, str]], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        name_servers(Zone.of("mydns."), given)


def test_unknown_name_is_nxdomain_with_soa() -> None:
    r = ask(front(), "nobody.mydns.")
    assert r.header.rcode == NXDOMAIN and r.header.aa == 1 and r.rr == []
    assert [rr.rtype for rr in r.auth] == [QTYPE.SOA] and r.auth[0].ttl == 60


@pytest.mark.parametrize("name, qtype", [("laptop.mydns.", "MX"), ("gpu1.lab.mydns.", "AAAA"),
                                         ("mydns.", "A"), ("mydns.", "TXT")])
def test_known_name_other_type_is_nodata(name: str, qtype: str) -> None:
    r = ask(front(), name, qtype)
    assert r.header.rcode == NOERROR and r.header.aa == 1 and r.rr == []
    assert [rr.rtype for rr in r.auth] == [QTYPE.SOA]


@pytest.mark.parametrize("name", ["example.com.", "xmydns.", "mydns.example.", ".", "com."])
def test_names_outside_the_zone_are_refused(name: str) -> None:
    r = ask(front(), name)
    assert r.header.rcode == REFUSED and r.header.aa == 0 and r.rr == [] and r.auth == []


def test_other_classes_are_refused() -> None:
    assert ask(front(), "laptop.mydns.", qclass=3).header.rcode == REFUSED  # CHAOS


def test_case_insensitive_match_echoes_the_question() -> None:
    r = ask(front(), "LaPToP.mYdNs.")
    assert str(r.q.qname) == "LaPToP.mYdNs." and rdatas(r) == ["192.0.2.1", "192.0.2.2"]
    assert all(str(rr.rname) == "LaPToP.mYdNs." for rr in r.rr)
    assert str(ask(front(), "MYDNS.", "SOA").rr[0].rname) == "MYDNS."


@pytest.mark.parametrize("name", ["_http._tcp.laptop.mydns.", "lap_top.mydns.", "-x.mydns."])
def test_names_no_record_can_have_are_nxdomain(name: str) -> None:
    assert ask(front(), name).header.rcode == NXDOMAIN


def test_a_label_holding_a_dot_is_not_two_labels() -> None:
    q = DNSRecord.question("x.mydns.")
    q.q.qname.label = (b"gpu1.lab", b"mydns")
    r = DNSRecord.parse(front().handle(q.pack(), tcp=False, now_s=NOW).data)
    assert r.header.rcode == NXDOMAIN


def test_empty_non_terminal_is_nodata_when_the_view_knows_subtrees() -> None:
    records = {"gpu1.lab": GPU}
    assert ask(front(MemoryView(dict(records))), "lab.mydns.").header.rcode == NXDOMAIN
    r = ask(front(SubtreeMemoryView(dict(records))), "lab.mydns.")
    assert r.header.rcode == NOERROR and r.rr == [] and r.auth[0].rtype == QTYPE.SOA
    assert ask(front(SubtreeMemoryView(dict(records))), "la.mydns.").header.rcode == NXDOMAIN


def test_any_gets_one_rfc8482_hinfo() -> None:
    for name in ("laptop.mydns.", "mydns."):
        r = ask(front(), name, "ANY")
        assert len(r.rr) == 1 and r.rr[0].rtype == QTYPE.HINFO
        assert r.rr[0].rdata.data == b"\x07RFC8482\x00"
    assert ask(front(), "nobody.mydns.", "ANY").header.rcode == NXDOMAIN


def test_zone_transfers_are_not_implemented() -> None:
    assert ask(front(), "mydns.", "AXFR").header.rcode == NOTIMP
    assert ask(front(), "mydns.", "IXFR").header.rcode == NOTIMP


@pytest.mark.parametrize("opcode", [1, 2, 4, 6, 15])
def test_other_opcodes_are_not_implemented(opcode: int) -> None:
    q = DNSRecord.question("laptop.mydns.")
    q.header.opcode = opcode
    reply = front().handle(q.pack(), tcp=False, now_s=NOW)
    r = DNSRecord.parse(reply.data)
    assert r.header.rcode == NOTIMP and r.header.opcode == opcode and r.header.id == q.header.id


def test_responses_are_dropped() -> None:
    q = DNSRecord.question("laptop.mydns.")
    q.header.qr = 1
    assert front().handle(q.pack(), tcp=False, now_s=NOW) == Drop()


@pytest.mark.parametrize("count", [0, 2])
def test_question_count_other_than_one_is_formerr(count: int) -> None:
    q = DNSRecord.question("laptop.mydns.")
    q.questions = [DNSQuestion("laptop.mydns.")] * count
    r = DNSRecord.parse(front().handle(q.pack(), tcp=False, now_s=NOW).data)
    assert r.header.rcode == FORMERR and r.header.id == q.header.id


def test_header_only_is_formerr_and_shorter_is_dropped() -> None:
    header = struct.pack("!6H", 0xBEEF, 0x0100, 1, 0, 0, 0)
    r = DNSRecord.parse(front().handle(header, tcp=False, now_s=NOW).data)
    assert r.header.id == 0xBEEF and r.header.rcode == FORMERR and r.header.qr == 1
    assert front().handle(header[:11], tcp=False, now_s=NOW) == Drop()
    assert front().handle(b"", tcp=True, now_s=NOW) == Drop()


def test_trailing_bytes_are_formerr() -> None:
    packet = DNSRecord.question("laptop.mydns.").pack() + b"\0"
    assert rcode_of(front().handle(packet, tcp=False, now_s=NOW).data) == FORMERR


def test_a_failing_view_costs_one_servfail() -> None:
    class Broken(MemoryView):
        def lookup(self, name: str) -> Record | None:
            raise RuntimeError("store unavailable")
    assert ask(front(Broken()), "laptop.mydns.").header.rcode == SERVFAIL


# --- EDNS and sizes --------------------------------------------------------------------


def test_edns_is_echoed_with_our_payload_size() -> None:
    r = ask(front(), "laptop.mydns.", edns=4096, do=True)
    opts = [rr for rr in r.ar if rr.rtype == QTYPE.OPT]
    assert len(opts) == 1 and opts[0].edns_len == 1232 and opts[0].edns_do == 1
    assert ask(front(), "laptop.mydns.").ar == []


def test_unknown_edns_version_is_badvers() -> None:
    q = DNSRecord.question("laptop.mydns.")
    q.add_ar(EDNS0(udp_len=1232, version=1))
    r = DNSRecord.parse(front().handle(q.pack(), tcp=False, now_s=NOW).data)
    assert r.header.rcode == 0 and r.ar[0].edns_rcode == 1 and r.rr == []  # BADVERS = 16


def test_two_opt_records_are_formerr() -> None:
    q = DNSRecord.question("laptop.mydns.")
    q.add_ar(EDNS0(udp_len=1232))
    q.add_ar(EDNS0(udp_len=1232))
    assert rcode_of(front().handle(q.pack(), tcp=False, now_s=NOW).data) == FORMERR


BIG_TEXTS = tuple(f"{i}" * 200 for i in range(4))
"""Stored texts (the store takes any number of strings of at most 255
octets): with ``updated=``, a TXT answer of about 900 bytes. Addresses
cannot make one that large: eight of each family fit 512 bytes."""


def big_view() -> MemoryView:
    ipv6 = tuple(f"2001:db8::{i:x}" for i in range(1, 9))
    return MemoryView({"big": Record("big", ("192.0.2.1",), ipv6, BIG_TEXTS, owner="x")})


@pytest.mark.parametrize("edns, truncated", [(None, True), (100, True), (512, True), (600, True),
                                             (1232, False), (4096, False)])
def test_answers_that_do_not_fit_udp_are_truncated(edns: int | None, truncated: bool) -> None:
    r = ask(front(big_view()), "big.mydns.", "TXT", edns=edns)
    assert r.header.tc == int(truncated)
    assert len(r.questions) == 1 and str(r.q.qname) == "big.mydns."
    assert len(r.rr) == (0 if truncated else 1 + len(BIG_TEXTS))
    assert r.auth == [] if truncated else True
    assert len(r.pack()) <= max(512, min(edns or 512, 1232))
    assert 600 < len(ask(front(big_view()), "big.mydns.", "TXT", tcp=True).pack()) <= 1232


def test_the_same_answer_is_complete_over_tcp() -> None:
    r = ask(front(big_view()), "big.mydns.", "TXT", tcp=True)
    assert r.header.tc == 0 and len(r.rr) == 1 + len(BIG_TEXTS)
    assert [t.strip('"') for t in rdatas(r)[1:]] == list(BIG_TEXTS)


def test_the_largest_address_answers_fit_512_bytes() -> None:
    """Eight addresses of a family under a name of 253 octets (less the
    zone): no truncation without EDNS, so no address answer amplifies more."""
    long_name = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 53])  # 246 + ".mydns" = 252
    record = Record(long_name, tuple(f"192.0.2.{i}" for i in range(1, 9)),
                    tuple(f"2001:db8::{i:x}" for i in range(1, 9)), owner="x")
    fe = front(MemoryView({long_name: record}))
    for qtype in ("A", "AAAA"):
        r = ask(fe, long_name + ".mydns.", qtype)
        assert r.header.tc == 0 and len(r.rr) == 8 and len(r.pack()) <= 512, qtype


# --- keys file ----------------------------------------------------------------------


def test_keys_file_format(tmp_path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"# lab keys\n\nLaptop. {SECRET_B64}   # its own name\n"
                    f"lab-admin {SECRET_B64} gpu1.lab *.farm\n")
    ring = KeyRing.load(str(path))
    assert len(ring) == 2
    assert ring.get("LAPTOP.") == TsigKey("laptop", SECRET)
    assert ring.get("lab-admin").grants == ("gpu1.lab", "*.farm")


@pytest.mark.parametrize("line, says", [
    ("laptop", "needs a name and a secret"),
    ("laptop not-base64!", "not valid base64"),
    (f"laptop {base64.b64encode(b'short').decode()}", "at least 16"),
    (f"bad..name {SECRET_B64}", "not a valid key name"),
    (f"laptop {SECRET_B64} under_score", "granted name"),
])
def test_bad_keys_lines_name_the_line(line: str, says: str) -> None:
    with pytest.raises(KeyFileError, match=rf"keys line 3: .*{says}"):
        KeyRing.parse(f"# comment\nok {SECRET_B64}\n{line}\n", source="keys")


def test_duplicate_key_and_missing_file(tmp_path) -> None:
    with pytest.raises(KeyFileError, match="line 2: key 'laptop' is defined twice"):
        KeyRing.parse(f"laptop {SECRET_B64}\nLAPTOP. {SECRET_B64}\n")
    with pytest.raises(KeyFileError, match="cannot read keys file"):
        KeyRing.load(str(tmp_path / "missing"))


# --- TSIG, signed independently of the module ----------------------------------------------


def wire(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".") if p) + b"\0"


def sign(packet: bytes, key: str = "laptop", secret: bytes = SECRET, when: int = NOW,
         algorithm: str = "hmac-sha256", corrupt: bool = False) -> tuple[bytes, bytes]:
    """``packet`` with a TSIG RR appended (RFC 8945 4.3.1); returns it and the MAC."""
    times = struct.pack("!HIH", when >> 32, when & 0xFFFFFFFF, 300)
    variables = (wire(key.lower()) + struct.pack("!HI", 255, 0) + wire(algorithm) + times
                 + struct.pack("!HH", 0, 0))
    mac = hmac.new(secret, packet + variables, hashlib.sha256).digest()
    if corrupt:
        mac = bytes([mac[0] ^ 1]) + mac[1:]
    rdata = wire(algorithm) + times + struct.pack("!H", len(mac)) + mac + packet[:2] + b"\0\0\0\0"
    rr = wire(key) + struct.pack("!HHIH", 250, 255, 0, len(rdata)) + rdata
    arcount = struct.unpack_from("!H", packet, 10)[0] + 1
    return packet[:10] + struct.pack("!H", arcount) + packet[12:] + rr, mac


@dataclass
class Tsig:
    error: int
    mac: bytes
    time_signed: int
    other: bytes


def check_signed(response: bytes, request_mac: bytes, secret: bytes = SECRET) -> Tsig:
    """The response's TSIG fields, after checking its MAC when it has one."""
    parsed = DNSRecord.parse(response)
    tsig = parsed.ar[-1]
    assert tsig.rtype == 250 and tsig.rclass == 255
    rdata = tsig.rdata.data
    start = len(response) - (len(wire(str(tsig.rname))) + 10 + len(rdata))
    alg_end = rdata.index(b"\0") + 1
    assert rdata[:alg_end] == wire("hmac-sha256")
    high, low, fudge, mac_size = struct.unpack_from("!HIHH", rdata, alg_end)
    mac = rdata[alg_end + 10:alg_end + 10 + mac_size]
    orig_id, error, other_len = struct.unpack_from("!HHH", rdata, alg_end + 10 + mac_size)
    other = rdata[len(rdata) - other_len:]
    if mac:
        arcount = struct.unpack_from("!H", response, 10)[0] - 1
        body = (struct.pack("!H", orig_id) + response[2:10] + struct.pack("!H", arcount)
                + response[12:start])
        variables = (wire(str(tsig.rname).lower()) + struct.pack("!HI", 255, 0)
                     + rdata[:alg_end + 8] + struct.pack("!HH", error, other_len) + other)
        expected = hmac.new(secret, struct.pack("!H", len(request_mac)) + request_mac + body
                            + variables, hashlib.sha256).digest()
        assert hmac.compare_digest(mac, expected), "the response MAC does not verify"
    return Tsig(error, mac, (high << 32) | low, other)


def update(*, updates: list[RR] = (), prereqs: list[RR] = (), zone: str = "mydns.",
           ident: int = 0x4242) -> bytes:
    msg = DNSRecord(DNSHeader(id=ident, bitmap=0, opcode=5))
    msg.add_question(DNSQuestion(zone, QTYPE.SOA))
    msg.rr, msg.auth = list(prereqs), list(updates)
    return bytes(msg.pack())


def add(name: str, address: str) -> RR:
    return RR(name, QTYPE.AAAA if ":" in address else QTYPE.A, 1, 300,
              AAAA(address) if ":" in address else A(address))


def delete_rr(name: str, address: str) -> RR:
    rr = add(name, address)
    rr.rclass, rr.ttl = 254, 0
    return rr


def delete_rrset(name: str, rtype: int) -> RR:
    return RR(name, rtype, 255, 0, RD(b""))


def delete_name(name: str) -> RR:
    return delete_rrset(name, 255)


def exists(name: str, rtype: int = 255, rclass: int = 255) -> RR:
    return RR(name, rtype, rclass, 0, RD(b""))


def send(fe: DnsFrontEnd, packet: bytes, **sign_kwargs) -> tuple[object, bytes]:
    signed, mac = sign(packet, **sign_kwargs)
    return fe.handle(signed, tcp=False, now_s=NOW), mac


def rcode_of(data: bytes) -> int:
    return DNSRecord.parse(data).header.rcode


def refused_with(fe: DnsFrontEnd, packet: bytes, rcode: int, **sign_kwargs) -> None:
    reply, mac = send(fe, packet, **sign_kwargs)
    assert isinstance(reply, Answer), reply
    assert rcode_of(reply.data) == rcode
    assert check_signed(reply.data, mac, sign_kwargs.get("secret", SECRET)).error == 0


def test_fixed_vectors_from_dnspython() -> None:
    """A request and response signed by dnspython 2.9.2 at t=1700000000."""
    request = bytes.fromhex(
        "123428000001000000010001056d79646e730000060001066c6170746f70c00c000100010000012c0004"
        "c0000209066c6170746f700000fa00ff00000000003d0b686d61632d7368613235360000006553f10001"
        "2c0020853b9748a4b6a80309381b7c3008daceab232d4c4c5c545385522a1f24b70414123400000000")
    response = bytes.fromhex(
        "1234a8000001000000000001056d79646e730000060001066c6170746f700000fa00ff00000000003d0b"
        "686d61632d7368613235360000006553f100012c00200338000b10d10f28de2822e8e4d8a816a4ba0677"
        "961cbe0a68ad6cb28935fa6e123400000000")
    reply = front(MemoryView()).handle(request, tcp=False, now_s=1_700_000_000)
    assert isinstance(reply, UpdateNeeded)
    assert reply.ops == (RecordOp("record_set", "laptop", ipv4=("192.0.2.9",),
                                  owner=tsig_owner("laptop"), seq=1),)
    # The response MAC, recomputed by the module, equals dnspython's.
    msg = parse_message(response)
    tsig = msg.additional[-1]
    fields = parse_tsig_rdata(response, tsig)
    body = response[:10] + b"\0\0" + response[12:tsig.start]
    request_mac = parse_tsig_rdata(request, parse_message(request).additional[-1]).mac
    assert tsig_digest(SECRET, tsig.labels, body, fields, request_mac) == fields.mac
    assert check_signed(response, request_mac).error == 0  # and the test's checker agrees


def test_unsigned_update_is_refused() -> None:
    packet = update(updates=[add("laptop.mydns.", "192.0.2.9")])
    reply = front().handle(packet, tcp=False, now_s=NOW)
    assert isinstance(reply, Answer) and rcode_of(reply.data) == REFUSED


def test_signed_add_claims_a_free_name() -> None:
    fe = front(MemoryView())
    reply, mac = send(fe, update(updates=[add("laptop.mydns.", "192.0.2.9"),
                                          add("LAPTOP.mydns.", "2001:db8::9")]))
    assert isinstance(reply, UpdateNeeded)
    owner = "key:" + token_hash("tsig:laptop")
    assert reply.ops == (RecordOp("record_set", "laptop", ipv4=("192.0.2.9",),
                                  ipv6=("2001:db8::9",), owner=owner, seq=1),)
    data = reply.finish([("ok", "claimed")])
    r = DNSRecord.parse(data)
    assert r.header.rcode == NOERROR and r.header.opcode == 5 and r.header.id == 0x4242
    assert str(r.q.qname) == "mydns." and r.q.qtype == QTYPE.SOA
    tsig = check_signed(data, mac)
    assert tsig.error == 0 and tsig.time_signed == NOW


def test_add_keeps_other_addresses_and_text_and_bumps_seq() -> None:
    reply, _ = send(front(), update(updates=[add("laptop.mydns.", "192.0.2.3")]))
    assert reply.ops == (RecordOp("record_set", "laptop",
                                  ipv4=("192.0.2.1", "192.0.2.2", "192.0.2.3"),
                                  ipv6=("2001:db8::1",), txt=("hello world",),
                                  owner=LAPTOP.owner, seq=8),)


def test_delete_one_address_then_the_last() -> None:
    reply, _ = send(front(), update(updates=[delete_rr("laptop.mydns.", "192.0.2.1")]))
    assert [(op.kind, op.ipv4, op.ipv6) for op in reply.ops] == [
        ("record_set", ("192.0.2.2",), ("2001:db8::1",))]
    reply, _ = send(front(), update(updates=[delete_rr("laptop.mydns.", "192.0.2.1"),
                                             delete_rr("laptop.mydns.", "192.0.2.2"),
                                             delete_rr("laptop.mydns.", "2001:db8::1")]))
    assert reply.ops == (RecordOp("record_delete", "laptop", owner=LAPTOP.owner),)


def test_delete_an_rrset_and_a_whole_name() -> None:
    reply, _ = send(front(), update(updates=[delete_rrset("laptop.mydns.", QTYPE.A)]))
    assert [(op.ipv4, op.ipv6) for op in reply.ops] == [((), ("2001:db8::1",))]
    reply, _ = send(front(), update(updates=[delete_name("laptop.mydns.")]))
    assert reply.ops == (RecordOp("record_delete", "laptop", owner=LAPTOP.owner),)


def test_replace_is_delete_rrset_then_add() -> None:
    reply, _ = send(front(), update(updates=[delete_rrset("laptop.mydns.", QTYPE.A),
                                             add("laptop.mydns.", "203.0.113.5")]))
    assert [(op.ipv4, op.ipv6) for op in reply.ops] == [(("203.0.113.5",), ("2001:db8::1",))]


def test_changes_that_change_nothing_answer_at_once() -> None:
    for updates in ([delete_name("laptop.mydns.")], [add("laptop.mydns.", "192.0.2.9"),
                                                     delete_rr("laptop.mydns.", "192.0.2.9")],
                    [delete_rrset("laptop.mydns.", QTYPE.TXT)]):
        reply, mac = send(front(MemoryView()), update(updates=updates))
        assert isinstance(reply, Answer) and rcode_of(reply.data) == NOERROR
        check_signed(reply.data, mac)
    reply, _ = send(front(), update(updates=[add("laptop.mydns.", "192.0.2.1")]))
    assert isinstance(reply, Answer) and rcode_of(reply.data) == NOERROR


def test_several_names_become_ops_in_order() -> None:
    fe = front(MemoryView())
    reply, mac = send(fe, update(updates=[add("gpu1.lab.mydns.", "10.0.0.1"),
                                          add("a.farm.mydns.", "10.0.0.2"),
                                          add("gpu1.lab.mydns.", "10.0.0.3")]),
                      key="lab-admin", secret=OTHER_SECRET)
    assert [(op.name, op.ipv4) for op in reply.ops] == [("gpu1.lab", ("10.0.0.1", "10.0.0.3")),
                                                        ("a.farm", ("10.0.0.2",))]
    assert {op.owner for op in reply.ops} == {tsig_owner("lab-admin")}
    check_signed(reply.finish([("ok", ""), ("ok", "")]), mac, OTHER_SECRET)


def test_name_claimed_by_a_json_token_is_refused() -> None:
    view = MemoryView({"laptop": Record("laptop", ("192.0.2.1",), owner=token_hash("json-token"))})
    refused_with(front(view), update(updates=[add("laptop.mydns.", "192.0.2.9")]), REFUSED)


@pytest.mark.parametrize("name", ["desktop.mydns.", "sub.laptop.mydns.", "mydns.", "farm.mydns."])
def test_names_outside_the_grant_are_refused(name: str) -> None:
    refused_with(front(), update(updates=[add(name, "192.0.2.9")]), REFUSED)
    refused_with(front(), update(updates=[add(name, "192.0.2.9")]), REFUSED,
                 key="lab-admin", secret=OTHER_SECRET)


def test_default_grant_strips_the_zone_from_the_key_name() -> None:
    keys = KeyRing([TsigKey("laptop.mydns", SECRET)])
    fe = DnsFrontEnd(view=MemoryView(), keyring=keys)
    reply, _ = send(fe, update(updates=[add("laptop.mydns.", "192.0.2.9")]), key="laptop.mydns")
    assert isinstance(reply, UpdateNeeded) and reply.ops[0].owner == tsig_owner("laptop.mydns")


def test_zone_and_names_outside_the_zone_are_notzone() -> None:
    refused_with(front(), update(updates=[add("laptop.example.", "192.0.2.9")], zone="example."),
                 NOTZONE)
    refused_with(front(), update(updates=[add("laptop.example.", "192.0.2.9")]), NOTZONE)
    refused_with(front(), update(prereqs=[exists("laptop.example.")]), NOTZONE)


@pytest.mark.parametrize("rr, rcode", [
    (RR("laptop.mydns.", QTYPE.TXT, 1, 60, RD(b"\x02hi")), REFUSED),
    (RR("laptop.mydns.", QTYPE.CNAME, 1, 60, RD(b"\0")), REFUSED),
    (RR("laptop.mydns.", QTYPE.A, 1, 60, RD(b"\1\2\3")), FORMERR),
    (RR("laptop.mydns.", QTYPE.ANY, 1, 60, RD(b"\1\2\3\4")), FORMERR),
    (RR("laptop.mydns.", QTYPE.A, 255, 60, RD(b"")), FORMERR),      # delete with a TTL
    (RR("laptop.mydns.", QTYPE.A, 3, 0, RD(b"\1\2\3\4")), FORMERR),  # CHAOS
])
def test_bad_update_records(rr: RR, rcode: int) -> None:
    refused_with(front(), update(updates=[rr]), rcode)


def test_zone_section_must_be_one_soa() -> None:
    msg = DNSRecord.parse(update(updates=[add("laptop.mydns.", "192.0.2.9")]))
    msg.q.qtype = QTYPE.A
    refused_with(front(), bytes(msg.pack()), FORMERR)


def eight_of_each(name: str) -> list[RR]:
    return ([add(name, f"10.0.0.{i}") for i in range(1, 9)]
            + [add(name, f"fd00::{i:x}") for i in range(1, 9)])


def test_eight_addresses_of_each_family_are_taken() -> None:
    reply, _ = send(front(MemoryView()), update(updates=eight_of_each("laptop.mydns.")))
    assert isinstance(reply, UpdateNeeded), reply
    (op,) = reply.ops
    assert (len(op.ipv4), len(op.ipv6)) == (8, 8)


@pytest.mark.parametrize("ninth", ["10.0.0.9", "fd00::9"])
def test_a_ninth_address_of_a_family_is_refused(ninth: str) -> None:
    updates = eight_of_each("laptop.mydns.") + [add("laptop.mydns.", ninth)]
    refused_with(front(MemoryView()), update(updates=updates), REFUSED)
    # The same when the eight are stored already: the update adds the ninth.
    stored = Record("laptop", tuple(f"10.0.0.{i}" for i in range(1, 9)),
                    tuple(f"fd00::{i:x}" for i in range(1, 9)), owner=tsig_owner("laptop"), seq=1)
    refused_with(front(MemoryView({"laptop": stored})),
                 update(updates=[add("laptop.mydns.", ninth)]), REFUSED)


def test_more_than_sixteen_addresses_are_refused() -> None:
    updates = [add("laptop.mydns.", f"10.0.0.{i}") for i in range(1, 40)]
    refused_with(front(MemoryView()), update(updates=updates), REFUSED)


@pytest.mark.parametrize("prereq, rcode", [
    (exists("laptop.mydns."), None),                          # name is in use
    (exists("nobody.mydns."), NXDOMAIN),
    (exists("laptop.mydns.", rclass=254), YXDOMAIN),          # name is not in use
    (exists("nobody.mydns.", rclass=254), None),
    (exists("laptop.mydns.", QTYPE.AAAA), None),              # RRset exists
    (exists("laptop.mydns.", QTYPE.MX), NXRRSET),
    (exists("laptop.mydns.", QTYPE.A, 254), YXRRSET),         # RRset does not exist
    (exists("laptop.mydns.", QTYPE.MX, 254), None),
    (exists("mydns.", QTYPE.SOA), None),
])
def test_prerequisites(prereq: RR, rcode: int | None) -> None:
    packet = update(prereqs=[prereq], updates=[add("laptop.mydns.", "192.0.2.9")])
    if rcode is None:
        reply, _ = send(front(), packet)
        assert isinstance(reply, UpdateNeeded)
    else:
        refused_with(front(), packet, rcode)


def test_value_dependent_prerequisite() -> None:
    whole = [RR("laptop.mydns.", QTYPE.A, 1, 0, A(a)) for a in LAPTOP.ipv4]
    reply, _ = send(front(), update(prereqs=whole, updates=[add("laptop.mydns.", "192.0.2.9")]))
    assert isinstance(reply, UpdateNeeded)
    refused_with(front(), update(prereqs=whole[:1], updates=[add("laptop.mydns.", "192.0.2.9")]),
                 NXRRSET)
    txt = RR("laptop.mydns.", QTYPE.TXT, 1, 0, RD(b"\x02hi"))
    refused_with(front(), update(prereqs=[txt]), NOTIMP)
    bad_ttl = RR("laptop.mydns.", QTYPE.A, 255, 60, RD(b""))
    refused_with(front(), update(prereqs=[bad_ttl]), FORMERR)


def test_updates_of_a_name_server_are_refused() -> None:
    """``laptop`` is granted to the key ``laptop`` by name and stored as
    its own, yet a name server of the zone it is: no update touches it."""
    fe = front(name_servers=(NameServer("laptop", ("192.0.2.53",)),))
    for ident, change in enumerate((add("laptop.mydns.", "192.0.2.9"),
                                    delete_name("laptop.mydns."),
                                    delete_rr("laptop.mydns.", "192.0.2.1"))):
        refused_with(fe, update(updates=[change], ident=ident), REFUSED)
    q = DNSRecord.parse(update(updates=[add("laptop.mydns.", "192.0.2.9")], ident=9))
    q.add_ar(EDNS0(udp_len=1232))
    reply, _ = send(fe, bytes(q.pack()))
    ede = [o for o in DNSRecord.parse(reply.data).ar[0].rdata if o.code == 15]
    assert b"'laptop' is a name server of the zone" in ede[0].data
    assert isinstance(send(front(), q.pack())[0], UpdateNeeded)  # not a name server: taken


def test_prerequisites_see_name_servers_as_queries_do() -> None:
    fe = front(MemoryView({"laptop": LAPTOP, "ns1": replace(GPU, name="ns1")}),
               name_servers=SERVERS)
    ours = [RR("ns1.mydns.", QTYPE.A, 1, 0, A("192.0.2.53"))]
    stored = [RR("ns1.mydns.", QTYPE.A, 1, 0, A(a)) for a in GPU.ipv4]
    change = [add("laptop.mydns.", "192.0.2.9")]
    for prereqs in (ours, [exists("ns1.mydns.")], [exists("b.ns.mydns.", QTYPE.A)],
                    [exists("ns2.mydns.", rclass=254)], [exists("ns1.mydns.", QTYPE.TXT, 254)]):
        assert isinstance(send(fe, update(prereqs=prereqs, updates=change))[0], UpdateNeeded)
    refused_with(fe, update(prereqs=stored, updates=change), NXRRSET)
    refused_with(fe, update(prereqs=[exists("ns1.mydns.", rclass=254)], updates=change), YXDOMAIN)


@pytest.mark.parametrize("results, rcode", [
    ([("ok", "updated")], NOERROR),
    ([(Status.ERROR, "the name is empty")], REFUSED),
    ([(Status.OWNED, "name 'laptop' is owned by another key; pass the token")], REFUSED),
    ([(Status.STALE, "stale upload")], REFUSED),
    ([("timeout", "no leader answered")], SERVFAIL),
    ([], SERVFAIL),
])
def test_finish_maps_cluster_results(results: list[tuple[str, str]], rcode: int) -> None:
    q = DNSRecord.parse(update(updates=[add("laptop.mydns.", "192.0.2.9")]))
    q.add_ar(EDNS0(udp_len=1232))
    reply, mac = send(front(), bytes(q.pack()))
    data = reply.finish(results)
    r = DNSRecord.parse(data)
    assert r.header.rcode == rcode and check_signed(data, mac).error == 0
    if results and rcode != NOERROR:
        ede = [o for o in r.ar[0].rdata if o.code == 15]
        assert ede and results[0][1].encode() in ede[0].data  # the reason, for dig users
    assert rcode_of(reply.finish([("ok", "")])) == NOERROR  # finish is repeatable


def test_unknown_key_is_badkey_unsigned() -> None:
    reply, _ = send(front(), update(updates=[add("laptop.mydns.", "192.0.2.9")]), key="stranger")
    assert rcode_of(reply.data) == NOTAUTH
    tsig = check_signed(reply.data, b"")
    assert tsig.error == BADKEY and tsig.mac == b""


def test_other_algorithm_is_badkey() -> None:
    reply, _ = send(front(), update(updates=[add("laptop.mydns.", "192.0.2.9")]),
                    algorithm="hmac-sha1")
    assert rcode_of(reply.data) == NOTAUTH and check_signed(reply.data, b"").error == BADKEY


def test_wrong_mac_is_badsig() -> None:
    for kwargs in ({"corrupt": True}, {"secret": OTHER_SECRET}):
        reply, _ = send(front(), update(updates=[add("laptop.mydns.", "192.0.2.9")]), **kwargs)
        assert rcode_of(reply.data) == NOTAUTH
        tsig = check_signed(reply.data, b"")
        assert tsig.error == BADSIG and tsig.mac == b""


@pytest.mark.parametrize("skew, accepted", [(0, True), (300, True), (-300, True), (301, False),
                                            (-3600, False)])
def test_time_outside_the_fudge_is_badtime(skew: int, accepted: bool) -> None:
    reply, mac = send(front(), update(updates=[add("laptop.mydns.", "192.0.2.9")]),
                      when=NOW + skew)
    if accepted:
        assert isinstance(reply, UpdateNeeded)
        return
    assert rcode_of(reply.data) == NOTAUTH
    tsig = check_signed(reply.data, mac)  # BADTIME answers are signed
    assert tsig.error == BADTIME and tsig.other == struct.pack("!HI", 0, NOW)


def test_tsig_not_last_is_formerr() -> None:
    signed, _ = sign(update(updates=[add("laptop.mydns.", "192.0.2.9")]))
    msg = DNSRecord.parse(signed)
    msg.add_ar(EDNS0(udp_len=1232))
    assert rcode_of(front().handle(bytes(msg.pack()), tcp=False, now_s=NOW).data) == FORMERR


def test_signed_query_gets_a_signed_answer() -> None:
    query = DNSRecord.question("laptop.mydns.")
    signed, mac = sign(bytes(query.pack()))
    reply = front().handle(signed, tcp=False, now_s=NOW)
    assert rdatas(DNSRecord.parse(reply.data)) == ["192.0.2.1", "192.0.2.2"]
    assert check_signed(reply.data, mac).error == 0


# --- against dnspython, when it is installed -------------------------------------------------


def test_dnspython_update_roundtrip() -> None:
    dns = pytest.importorskip("dns")
    import dns.message
    import dns.rcode
    import dns.tsig
    import dns.tsigkeyring
    import dns.update

    keyring = dns.tsigkeyring.from_text({"laptop.": SECRET_B64})
    msg = dns.update.UpdateMessage("mydns.", keyring=keyring, keyname="laptop.",
                                   keyalgorithm=dns.tsig.HMAC_SHA256)
    msg.replace("laptop", 300, "A", "192.0.2.77")
    msg.add("laptop", 300, "AAAA", "2001:db8::77")
    msg.delete("laptop", "A", "192.0.2.2")
    reply = front().handle(msg.to_wire(), tcp=True, now_s=NOW)  # dnspython signs with its clock
    assert isinstance(reply, Answer) and rcode_of(reply.data) == NOTAUTH  # so: BADTIME
    with pytest.raises(dns.tsig.PeerBadTime):
        dns.message.from_wire(reply.data, keyring=keyring, request_mac=msg.mac)

    wire = msg.to_wire()
    now = parse_tsig_rdata(wire, parse_message(wire).additional[-1]).time_signed
    reply = front().handle(wire, tcp=True, now_s=now)
    assert reply.ops == (RecordOp("record_set", "laptop", ipv4=("192.0.2.77",),
                                  ipv6=("2001:db8::1", "2001:db8::77"), txt=LAPTOP.txt,
                                  owner=LAPTOP.owner, seq=8),)
    response = dns.message.from_wire(reply.finish([("ok", "updated")]), keyring=keyring,
                                     request_mac=msg.mac)
    assert response.rcode() == dns.rcode.NOERROR and response.had_tsig

    stranger = dns.tsigkeyring.from_text({"stranger.": SECRET_B64})
    bad = dns.update.UpdateMessage("mydns.", keyring=stranger, keyname="stranger.")
    bad.add("laptop", 300, "A", "192.0.2.77")
    wire = bad.to_wire()
    reply = front().handle(wire, tcp=False, now_s=now)
    with pytest.raises(dns.tsig.PeerBadKey):
        dns.message.from_wire(reply.data, keyring=stranger, request_mac=bad.mac)


def test_dnspython_queries() -> None:
    dns = pytest.importorskip("dns")
    import dns.message
    import dns.rcode

    query = dns.message.make_query("gPu1.LAB.mydns.", "A", use_edns=0, payload=4096)
    response = dns.message.from_wire(front().handle(query.to_wire(), tcp=False, now_s=NOW).data)
    assert response.rcode() == dns.rcode.NOERROR and response.payload == 1232
    assert str(response.answer[0].name) == "gPu1.LAB.mydns."
    assert [r.address for r in response.answer[0]] == ["198.51.100.7"]
    query = dns.message.make_query("nobody.mydns.", "A")
    response = dns.message.from_wire(front().handle(query.to_wire(), tcp=False, now_s=NOW).data)
    assert response.rcode() == dns.rcode.NXDOMAIN and response.authority[0].rdtype == 6
