"""A deployment across three machines, on one host: 127.0.0.2, .3 and .4
each run an etcd member and a front end (``mydns frontend --store etcd``)
on the same port, as docs/deploy.md sets them up. One whole machine, the
one whose member leads, is killed: the other two keep answering DNS and
taking updates. Then it comes back and answers the latest records.

Replay: ``pytest tests/test_etcd_topology.py``.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import dnslib
import pytest

from mydns_lab.clients.jsonclient import NoAnswer, json_call
from mydns_lab.clients.put import TRY_TIMEOUT_S
from mydns_lab.experiments.etcdprocess import MACHINES, EtcdCluster, Member, etcd_binary
from mydns_lab.experiments.labprocess import REPO, free_port_range, wait_for

TOKEN = "topology-test-token-0123456789"


class Machine:
    """One "machine": an etcd member and the front end beside it."""

    def __init__(self, cluster: EtcdCluster, member: Member, port: int, log: Path) -> None:
        self.cluster, self.member, self.port, self.log = cluster, member, port, log
        self.front_end: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self.member.host, self.port

    def start_front_end(self) -> None:
        with open(self.log, "ab") as log:
            self.front_end = subprocess.Popen(
                [sys.executable, "-m", "mydns_lab", "frontend", "--store", "etcd",
                 "--etcd-endpoints", self.cluster.endpoints, "--bind", self.member.host,
                 "--port", str(self.port), "--http-port", "0", "--expire", "0"],
                cwd=REPO, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        wait_for(lambda: answers_dns(self.address), 20, f"the front end at {self.address}")

    def stop_front_end(self, kill: bool = False) -> None:
        if self.front_end is None:
            return
        if kill:
            self.front_end.kill()
        else:
            self.front_end.terminate()
        try:
            self.front_end.wait(10)
        except subprocess.TimeoutExpired:
            self.front_end.kill()
            self.front_end.wait(5)
        self.front_end = None


def answers_dns(server: tuple[str, int]) -> bool:
    return lookup(server, "readiness-probe") not in (None, "SERVFAIL")


def lookup(server: tuple[str, int], name: str) -> str | None:
    """The A answer for ``name.mydns.`` (an address, NXDOMAIN, SERVFAIL),
    or None when there is no reply within 1 s."""
    query = dnslib.DNSRecord.question(f"{name}.mydns.", "A")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.sendto(query.pack(), server)
            reply = dnslib.DNSRecord.parse(sock.recv(4096))
        except (OSError, dnslib.DNSError):
            return None
    if reply.header.rcode != dnslib.RCODE.NOERROR:
        return dnslib.RCODE.get(reply.header.rcode)
    return str(reply.rr[0].rdata) if reply.rr else "NODATA"


def upload(server: tuple[str, int], address: str, seq: int) -> str:
    """The front end's outcome or refusal code, or "no answer". It waits as
    put.py does: longer than the front end waits for etcd, so a refusal
    after that wait (``unavailable``) is heard rather than raced."""
    try:
        reply = json_call(server, {"Type": "Put", "Key": "laptop", "Value": address,
                                   "Token": TOKEN, "Seq": seq}, timeout_s=TRY_TIMEOUT_S)
    except NoAnswer:
        return "no answer"
    return reply.get("Outcome") or reply.get("Code", "?")


@pytest.fixture
def machines(tmp_path: Path) -> Iterator[list[Machine]]:
    if etcd_binary() is None:
        pytest.skip("etcd is not installed: install Debian's etcd-server "
                    "(apt-get install etcd-server; run_tests.sh does it as root)")
    base = free_port_range(3, 32000, MACHINES)
    with EtcdCluster(tmp_path / "etcd", MACHINES, client_port=base) as cluster:
        group = [Machine(cluster, member, base + 2, tmp_path / f"{member.name}-frontend.log")
                 for member in cluster.members]
        try:
            for machine in group:
                machine.start_front_end()
            yield group
        finally:
            for machine in group:
                machine.stop_front_end()


def test_losing_a_whole_machine(machines: list[Machine]) -> None:
    everyone = [m.address for m in machines]
    assert upload(everyone[0], "10.1.0.1", 1) == "claimed"
    wait_for(lambda: all(lookup(s, "laptop") == "10.1.0.1" for s in everyone), 10,
             "every front end to answer the claim")

    cluster = machines[0].cluster
    leader = cluster.leader()
    assert leader is not None
    lost = next(m for m in machines if m.member == leader)
    lost.stop_front_end(kill=True)
    cluster.kill_member(leader)
    survivors = [m.address for m in machines if m is not lost]

    # Updates go on through either survivor once etcd has a new leader.
    seq = 2
    def updated() -> bool:
        nonlocal seq
        seq += 1
        return upload(survivors[seq % 2], f"10.1.0.{seq}", seq) == "updated"
    wait_for(updated, 15, "an update accepted after the machine was lost")
    latest = f"10.1.0.{seq}"
    wait_for(lambda: all(lookup(s, "laptop") == latest for s in survivors), 10,
             "both survivors to answer the update")

    cluster.restart_member(leader)
    lost.start_front_end()
    wait_for(lambda: lookup(lost.address, "laptop") == latest, 15,
             "the machine that came back to answer the latest address")
    assert upload(lost.address, "10.1.9.9", seq + 1) == "updated"
    wait_for(lambda: all(lookup(s, "laptop") == "10.1.9.9" for s in everyone), 10,
             "every front end to answer the update made through the returned machine")


def test_without_etcd_the_copies_keep_answering(machines: list[Machine]) -> None:
    """Every etcd member gone: in the default cache mode each front end
    answers DNS from the records it had, and an update is refused as
    unavailable (not lost, not acknowledged)."""
    everyone = [m.address for m in machines]
    assert upload(everyone[1], "10.2.0.1", 1) == "claimed"
    wait_for(lambda: all(lookup(s, "laptop") == "10.2.0.1" for s in everyone), 10,
             "every front end to answer the claim")
    cluster = machines[0].cluster
    for member in cluster.members:
        cluster.kill_member(member)
    assert all(lookup(s, "laptop") == "10.2.0.1" for s in everyone)
    assert upload(everyone[2], "10.2.0.2", 2) == "unavailable"
    assert all(lookup(s, "laptop") == "10.2.0.1" for s in everyone)
