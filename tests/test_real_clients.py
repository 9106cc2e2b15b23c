"""Real DNS clients against a running lab: dig and kdig over UDP and TCP,
nsupdate with a TSIG key, and dnspython as a program would use it.

The lab answers from each front end's copy of the records (the default
``cache`` reads), so after a change the tests poll until every front end
shows it, against a deadline. ``dig`` and ``nsupdate`` come from the Debian
package bind9-dnsutils, ``kdig`` from knot-dnsutils; a test whose binary is
missing is skipped and says which package to install (run_tests.sh installs
them when it runs as root with apt-get).
"""

from __future__ import annotations

import base64
import hashlib
import subprocess

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import dns.update
import pytest

from mydns_lab.experiments.labprocess import LabProcess, wait_for
from tests.realtools import need

pytestmark = pytest.mark.lab

ZONE = "mydns."
TIMEOUT_S = 2.0
VISIBLE_WITHIN_S = 10.0
MANY_V4 = [f"10.20.0.{i}" for i in range(1, 9)]      # the most a name may hold:
MANY_V6 = [f"fd00::20:{i:x}" for i in range(1, 9)]   # eight of each family
LONG = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 50])  # 242 octets: 248 with the zone
"""A long name holding eight AAAA: its answer (490 bytes) fits 512 unsigned,
but not with a TSIG signature, so a signed query without EDNS is truncated.
Addresses alone can no longer make an answer too large for UDP."""


def secret(name: str) -> str:
    """A fixed HMAC-SHA256 secret per key name (the tests are deterministic)."""
    return base64.b64encode(hashlib.sha256(f"mydns-test-{name}".encode()).digest()).decode()


KEYS = f"""\
# name   secret                     granted names
laptop   {secret("laptop")}
admin    {secret("admin")}   gpu1.lab *.lab
"""


def ask(port: int, name: str, rdtype: str, tcp: bool = False,
        edns: bool = True) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, use_edns=0 if edns else False)
    send = dns.query.tcp if tcp else dns.query.udp
    return send(query, "127.0.0.1", timeout=TIMEOUT_S, port=port)


def addresses(port: int, name: str, rdtype: str) -> list[str]:
    reply = ask(port, name, rdtype)
    return sorted(rdata.to_text() for rrset in reply.answer for rdata in rrset)


def wait_until_every_front_end(lab: LabProcess, name: str, rdtype: str,
                               expected: list[str]) -> None:
    wait_for(lambda: all(addresses(port, name, rdtype) == expected
                         for _, port in lab.servers()),
             VISIBLE_WITHIN_S, f"every front end to answer {name} {rdtype} {expected}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("real-clients")
    keys = folder / "keys.txt"
    keys.write_text(KEYS)
    keys.chmod(0o600)  # the launcher refuses a keys file others can read
    with LabProcess(folder / "data", "--keys", str(keys), nservers=3, nclerks=2,
                    seed=7) as lab:
        for name, value in (("web", ["10.1.2.3", "fd00::53"]), ("many", MANY_V4 + MANY_V6),
                            (LONG, MANY_V6)):
            reply = lab.call(0, {"Type": "Put", "Key": name, "Value": value, "Seq": 1,
                                 "Token": f"token-of-{name[:8]}"})
            assert reply["Type"] == "PutOk", reply
        wait_until_every_front_end(lab, "web.mydns.", "AAAA", ["fd00::53"])
        wait_until_every_front_end(lab, "many.mydns.", "A", sorted(MANY_V4))
        wait_until_every_front_end(lab, f"{LONG}.mydns.", "AAAA", sorted(MANY_V6))
        yield lab


def run(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)


# --- dig and kdig ------------------------------------------------------------------------

@pytest.mark.parametrize("tool", ["dig", "kdig"])
@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_dig_and_kdig_read_the_records(lab: LabProcess, tool: str, transport: str) -> None:
    binary = need(tool)
    once = "+tries=1" if tool == "dig" else "+retry=0"
    flags = ["+short", "+tcp" if transport == "tcp" else "+notcp", "+time=2", once]
    for _, port in lab.servers():
        for rdtype, expected in (("A", "10.1.2.3"), ("AAAA", "fd00::53")):
            done = run(binary, "@127.0.0.1", "-p", str(port), "web.mydns.", rdtype, *flags)
            assert (done.returncode, done.stdout.strip()) == (0, expected), done.stderr


def test_dig_reports_nxdomain_with_the_soa(lab: LabProcess) -> None:
    done = run(need("dig"), "@127.0.0.1", "-p", str(lab.port), "nosuch.mydns.", "A",
               "+time=2", "+tries=1")
    assert "status: NXDOMAIN" in done.stdout and "flags: qr aa" in done.stdout
    assert any(line.startswith("mydns.") and "\tSOA\t" in line
               for line in done.stdout.split(";; AUTHORITY SECTION:")[1].splitlines())


def dig_records(port: int, name: str, rdtype: str) -> list[tuple[str, ...]]:
    """(owner, type, value) of each RR in dig's answer and additional sections."""
    done = run(need("dig"), "@127.0.0.1", "-p", str(port), name, rdtype, "+noall", "+answer",
               "+additional", "+time=2", "+tries=1")
    assert done.returncode == 0, done.stdout + done.stderr
    return [(f[0], f[3], " ".join(f[4:])) for line in done.stdout.splitlines()
            if line and not line.startswith(";") and (f := line.split())[3] != "OPT"]


def test_dig_finds_a_name_server_per_front_end_with_its_address(lab: LabProcess) -> None:
    """ns1 and ns2 (two front ends) at --bind, in the zone: NS answers carry
    their addresses, A queries answer them, the SOA names ns1 with a serial
    of at least 1, and no client may claim them."""
    for _, port in lab.servers():
        assert dig_records(port, ZONE, "NS") == [
            ("mydns.", "NS", "ns1.mydns."), ("mydns.", "NS", "ns2.mydns."),
            ("ns1.mydns.", "A", "127.0.0.1"), ("ns2.mydns.", "A", "127.0.0.1")]
        assert dig_records(port, "ns2.mydns.", "A") == [("ns2.mydns.", "A", "127.0.0.1")]
        assert dig_records(port, "ns1.mydns.", "AAAA") == []
        ((_, _, soa),) = dig_records(port, ZONE, "SOA")
        mname, rname, serial = soa.split()[:3]
        assert (mname, rname) == ("ns1.mydns.", "hostmaster.mydns.") and int(serial) >= 1
    refused = lab.call(0, {"Type": "Put", "Key": "ns1", "Value": "10.6.6.6", "Token": "thief"})
    assert refused["Code"] == "reserved" and "name server" in refused["Error"], refused
    assert dig_records(lab.port, "ns1.mydns.", "A") == [("ns1.mydns.", "A", "127.0.0.1")]


def test_ns_flags_name_the_servers_in_order(tmp_path) -> None:
    need("dig")
    with LabProcess(tmp_path / "data", "--ns", "dns-a=127.0.0.1", "--ns", "dns-b.mydns.=::1",
                    "--ns", "dns-a=fd00::a", nservers=1, nclerks=1, seed=3) as lab:
        assert dig_records(lab.port, ZONE, "NS") == [
            ("mydns.", "NS", "dns-a.mydns."), ("mydns.", "NS", "dns-b.mydns."),
            ("dns-a.mydns.", "A", "127.0.0.1"), ("dns-a.mydns.", "AAAA", "fd00::a"),
            ("dns-b.mydns.", "AAAA", "::1")]
        assert dig_records(lab.port, "dns-b.mydns.", "AAAA") == [("dns-b.mydns.", "AAAA", "::1")]
        assert dig_records(lab.port, "ns1.mydns.", "A") == []  # not a name server here
        ((_, _, soa),) = dig_records(lab.port, ZONE, "SOA")
        assert soa.split()[0] == "dns-a.mydns."


def test_dig_over_tcp_gets_what_udp_had_to_truncate(lab: LabProcess) -> None:
    binary = need("dig")
    signed = ["-y", f"hmac-sha256:admin:{secret('admin')}", "+noedns", "+time=2", "+tries=1"]
    udp = run(binary, "@127.0.0.1", "-p", str(lab.port), f"{LONG}.mydns.", "AAAA", "+ignore",
              *signed)
    assert " tc " in udp.stdout.replace(";", " ") and "ANSWER: 0" in udp.stdout, udp.stdout
    tcp = run(binary, "@127.0.0.1", "-p", str(lab.port), f"{LONG}.mydns.", "AAAA", "+short",
              *signed)  # dig itself retries over TCP
    assert sorted(tcp.stdout.split()) == sorted(MANY_V6), tcp.stdout + tcp.stderr
    unsigned = run(binary, "@127.0.0.1", "-p", str(lab.port), f"{LONG}.mydns.", "AAAA",
                   "+noedns", "+ignore", "+time=2", "+tries=1")
    assert " tc " not in unsigned.stdout.replace(";", " ") and "ANSWER: 8" in unsigned.stdout


# --- nsupdate with TSIG ------------------------------------------------------------------

def nsupdate(lab: LabProcess, key: str, key_secret: str, *updates: str) -> subprocess.CompletedProcess:
    script = "\n".join([f"server 127.0.0.1 {lab.port}", f"zone {ZONE}", *updates, "send", ""])
    return run(need("nsupdate"), "-t", "5", "-y", f"hmac-sha256:{key}:{key_secret}",
               stdin=script)


def test_nsupdate_adds_an_aaaa_record_dig_then_sees(lab: LabProcess) -> None:
    done = nsupdate(lab, "laptop", secret("laptop"),
                    "update add laptop.mydns. 300 AAAA fd00::1234",
                    "update add laptop.mydns. 300 A 10.4.3.2")
    assert done.returncode == 0, done.stdout + done.stderr
    wait_until_every_front_end(lab, "laptop.mydns.", "AAAA", ["fd00::1234"])
    dig = run(need("dig"), "@127.0.0.1", "-p", str(lab.port + 1), "laptop.mydns.", "AAAA",
              "+short", "+tcp")
    assert dig.stdout.strip() == "fd00::1234"
    # Deleting one address keeps the other.
    done = nsupdate(lab, "laptop", secret("laptop"), "update delete laptop.mydns. AAAA")
    assert done.returncode == 0, done.stdout + done.stderr
    wait_until_every_front_end(lab, "laptop.mydns.", "AAAA", [])
    assert addresses(lab.port, "laptop.mydns.", "A") == ["10.4.3.2"]


@pytest.mark.parametrize("key, key_secret, name, rcode", [
    ("laptop", secret("laptop"), "stolen.mydns.", "REFUSED"),   # not granted to the key
    ("laptop", secret("admin"), "laptop.mydns.", "NOTAUTH"),    # wrong secret
    ("admin", secret("admin"), "web.mydns.", "REFUSED"),        # not granted, and JSON-owned
], ids=["not-granted", "wrong-secret", "json-owned"])
def test_nsupdate_without_the_right_is_refused(lab: LabProcess, key: str, key_secret: str,
                                                name: str, rcode: str) -> None:
    done = nsupdate(lab, key, key_secret, f"update add {name} 60 A 10.6.6.6")
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert f"update failed: {rcode}" in output, output
    assert "10.6.6.6" not in addresses(lab.port, name, "A")


# --- dnspython ---------------------------------------------------------------------------

@pytest.mark.parametrize("tcp", [False, True])
def test_dnspython_answers(lab: LabProcess, tcp: bool) -> None:
    port = lab.port + 1
    a = ask(port, "web.mydns.", "A", tcp)
    assert a.rcode() == dns.rcode.NOERROR and a.flags & dns.flags.AA
    assert [r.to_text() for r in a.answer[0]] == ["10.1.2.3"] and a.answer[0].ttl == 60
    assert [r.to_text() for r in ask(port, "web.mydns.", "AAAA", tcp).answer[0]] == ["fd00::53"]
    txt = ask(port, "web.mydns.", "TXT", tcp)
    assert b"".join(txt.answer[0][0].strings).startswith(b"updated=")

    soa = ask(port, ZONE, "SOA", tcp)
    assert soa.answer[0].rdtype == dns.rdatatype.SOA and soa.answer[0][0].serial > 0

    nx = ask(port, "nosuch.mydns.", "A", tcp)
    assert nx.rcode() == dns.rcode.NXDOMAIN and not nx.answer
    assert nx.authority[0].rdtype == dns.rdatatype.SOA

    nodata = ask(port, "web.mydns.", "MX", tcp)
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    assert nodata.authority[0].rdtype == dns.rdatatype.SOA

    assert ask(port, "www.example.com.", "A", tcp).rcode() == dns.rcode.REFUSED


def signed_query(name: str, rdtype: str, edns: bool) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, use_edns=0 if edns else False)
    query.use_tsig(dns.tsigkeyring.from_text({"admin": secret("admin")}), keyname="admin",
                   algorithm=dns.tsig.HMAC_SHA256)
    return query


def test_dnspython_truncation_and_tcp(lab: LabProcess) -> None:
    name = f"{LONG}.mydns."
    udp = dns.query.udp(signed_query(name, "AAAA", edns=False), "127.0.0.1",
                        timeout=TIMEOUT_S, port=lab.port)
    assert udp.flags & dns.flags.TC and not udp.answer and udp.had_tsig
    with_edns = dns.query.udp(signed_query(name, "AAAA", edns=True), "127.0.0.1",
                              timeout=TIMEOUT_S, port=lab.port)    # 1232 bytes: fits
    assert not with_edns.flags & dns.flags.TC and len(with_edns.answer[0]) == 8
    tcp = dns.query.tcp(signed_query(name, "AAAA", edns=False), "127.0.0.1",
                        timeout=TIMEOUT_S, port=lab.port)
    assert sorted(r.to_text() for r in tcp.answer[0]) == sorted(MANY_V6) and tcp.had_tsig
    # The most a name may hold fits 512 bytes without a signature, both families.
    for rdtype, expected in (("A", MANY_V4), ("AAAA", MANY_V6)):
        plain = ask(lab.port, "many.mydns.", rdtype, edns=False)
        assert not plain.flags & dns.flags.TC
        assert sorted(r.to_text() for r in plain.answer[0]) == sorted(expected)


def test_dnspython_tsig_update_owns_the_name(lab: LabProcess) -> None:
    keyring = dns.tsigkeyring.from_text({"admin": secret("admin")})
    update = dns.update.UpdateMessage(ZONE, keyring=keyring, keyalgorithm=dns.tsig.HMAC_SHA256)
    update.add("gpu1.lab", 60, "A", "10.30.0.1")
    reply = dns.query.tcp(update, "127.0.0.1", timeout=TIMEOUT_S, port=lab.port)
    assert reply.rcode() == dns.rcode.NOERROR
    wait_until_every_front_end(lab, "gpu1.lab.mydns.", "A", ["10.30.0.1"])
    # A name the keys file grants to a key is that key's: no JSON Put, with a
    # token or without, claims or changes it.
    for token in ({"Token": "any"}, {}):
        for name in ("gpu1.lab", "unclaimed.lab"):
            refused = lab.call(1, {"Type": "Put", "Key": name, "Value": "10.6.6.6",
                                   "Seq": 10**15, **token})
            assert refused["Type"] == "Error" and refused["Code"] == "reserved", refused
            assert "nsupdate" in refused["Error"]
    assert addresses(lab.port + 1, "gpu1.lab.mydns.", "A") == ["10.30.0.1"]
