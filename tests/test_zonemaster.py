"""DNS conformance: Zonemaster (zonemaster-cli) tests the zone as a front end
serves it, and Knot DNS serving the same zone is the reference.

Zonemaster only asks port 53, so the server under test listens on
127.0.0.1:53: first knotd with the zone from a file, then a lab's front end
0, each with the same names (the apex SOA and NS ``ns1.mydns.``, ``ns1`` at
127.0.0.1, one host ``laptop`` at 192.0.2.1). A one-address loopback zone
has ERRORs of its own (one name server, a private address), so the check is
relative: every ERROR or CRITICAL MyDNS gets, Knot gets too.

Zonemaster also finds the zone's parent from the root. So that it sends
nothing off the machine (and does not wait for root servers that cannot be
reached), a second knotd serves a small root zone on 127.0.0.2:53
delegating ``mydns.`` to ns1 at 127.0.0.1, and ``--hints`` names it as the
only root server. The whole default profile runs (about 2 s a zone), so the
delegation and consistency test cases (EXTRA_NAME_PARENT,
TOTAL_NAME_MISMATCH, IN_BAILIWICK_ADDR_MISMATCH) are all in.

Needs root (port 53), zonemaster-cli (Debian package zonemaster-cli) and
knotd (Debian package knot); without them the test is skipped and says so
(run_tests.sh installs both when it runs as root with apt-get).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

from mydns_lab.dns.answers import SOA_EXPIRE_S, SOA_REFRESH_S, SOA_RETRY_S
from mydns_lab.experiments.labprocess import LabProcess, wait_for
from tests.realtools import need

pytestmark = pytest.mark.lab

ZONE = "mydns."
TTL_S = 60                      # the lab's default --ttl, also its SOA minimum
HOST, HOST_ADDRESS = "laptop", "192.0.2.1"
CHILD, ROOT = "127.0.0.1", "127.0.0.2"  # the server under test; the stand-in root
ZONEMASTER_TIMEOUT_S = 120      # a run takes about 2 s with the local root
READY_WITHIN_S = 10.0
FAILING_LEVELS = ("ERROR", "CRITICAL")

ZONE_FILE = f"""\
$ORIGIN {ZONE}
$TTL {TTL_S}
@       SOA ns1.{ZONE} hostmaster.{ZONE} 1 {SOA_REFRESH_S} {SOA_RETRY_S} {SOA_EXPIRE_S} {TTL_S}
@       NS  ns1.{ZONE}
ns1     A   {CHILD}
{HOST}  A   {HOST_ADDRESS}
"""
ROOT_FILE = f"""\
$TTL 3600
.             SOA a.root.test. hostmaster.root.test. 1 3600 900 604800 60
.             NS  a.root.test.
a.root.test.  A   {ROOT}
{ZONE}        NS  ns1.{ZONE}
ns1.{ZONE}    A   {CHILD}
"""
HINTS = f""".  3600000 NS a.root.test.\na.root.test.  3600000 A {ROOT}\n"""


def port_53_free(address: str) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((address, 53))
            except OSError:
                return False
    return True


def answers(address: str, name: str, rdtype: str) -> list[str]:
    """The answer to one query on ``address``:53 (empty on no answer)."""
    try:
        reply = dns.query.udp(dns.message.make_query(name, rdtype), address, timeout=1.0)
    except (dns.exception.Timeout, OSError):
        return []
    if reply.rcode() != dns.rcode.NOERROR:
        return []
    return [rdata.to_text() for rrset in reply.answer for rdata in rrset]


@contextmanager
def knotd(binary: str, folder: Path, address: str, origin: str, zone_text: str) -> Iterator[None]:
    """knotd serving ``origin`` from ``zone_text`` on ``address``:53, its
    files (config, zone, journal, control socket, log) all in ``folder``;
    stopped on exit."""
    folder.mkdir(parents=True)
    (folder / "zone").write_text(zone_text)
    (folder / "knot.conf").write_text(f"""\
server:
    rundir: {folder}
    listen: {address}@53
database:
    storage: {folder}
log:
  - target: stderr
    any: info
zone:
  - domain: {origin}
    storage: {folder}
    file: zone
""")
    log_path = folder / "knotd.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([binary, "-c", str(folder / "knot.conf")], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def serving() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"knotd exited {proc.returncode}:\n{log_path.read_text()}")
        return bool(answers(address, origin, "SOA"))

    try:
        wait_for(serving, READY_WITHIN_S, f"knotd to serve {origin} on {address}:53")
        yield
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def zonemaster(binary: str, hints: Path) -> list[str]:
    """``TESTCASE TAG`` of every ERROR or CRITICAL zonemaster-cli reports
    for the zone at 127.0.0.1:53, sorted, without duplicates."""
    argv = [binary, ZONE, "--ns", f"ns1.{ZONE}/{CHILD}", "--hints", str(hints), "--no-ipv6",
            "--level", "ERROR", "--json", "--no-progress"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=ZONEMASTER_TIMEOUT_S)
    assert done.returncode == 0, f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr}"
    entries = json.loads(done.stdout)
    return sorted({f"{e['testcase']} {e['tag']}" for e in entries
                   if e["level"] in FAILING_LEVELS})


def test_mydns_has_no_zonemaster_error_that_knot_has_not(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("Zonemaster only asks port 53, which needs root; run the tests as root")
    zonemaster_cli, knot = need("zonemaster-cli"), need("knotd")
    for address in (CHILD, ROOT):
        if not port_53_free(address):
            pytest.skip(f"{address}:53 is in use (a local resolver?); stop it to run this test")
    hints = tmp_path / "root.hints"
    hints.write_text(HINTS)

    with knotd(knot, tmp_path / "root", ROOT, ".", ROOT_FILE):
        with knotd(knot, tmp_path / "knot", CHILD, ZONE, ZONE_FILE):
            knot_errors = zonemaster(zonemaster_cli, hints)

        with LabProcess(tmp_path / "data", "--http-port", "0", nservers=3, nclerks=1, seed=1,
                        port=53) as lab:
            reply = lab.call(0, {"Type": "Put", "Key": HOST, "Value": HOST_ADDRESS,
                                 "Token": "t"})
            assert reply["Type"] == "PutOk", reply
            wait_for(lambda: answers(CHILD, f"{HOST}.{ZONE}", "A") == [HOST_ADDRESS],
                     READY_WITHIN_S, f"{HOST}.{ZONE} A {HOST_ADDRESS} on {CHILD}:53")
            mydns_errors = zonemaster(zonemaster_cli, hints)

    print("Knot DNS:", *knot_errors, sep="\n  ")
    print("MyDNS:", *mydns_errors, sep="\n  ")
    extra = sorted(set(mydns_errors) - set(knot_errors))
    assert not extra, (f"MyDNS gets Zonemaster {'/'.join(FAILING_LEVELS)}s Knot does not: "
                       f"{extra}\nKnot: {knot_errors}\nMyDNS: {mydns_errors}\n"
                       f"(lab: {lab.replay})")
