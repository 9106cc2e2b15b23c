"""put.py and query.py as a user runs them (subprocesses) against a real lab,
the JSON protocol's ownership rules, the JSON front end's error codes
(against a stand-in for the cluster, no lab), and query.py's TCP retry on a
truncated answer (against a small fake server, no lab).

The lab answers DNS with ``--dns-reads linearizable``, so a name that
put.py was told is stored is what the next query.py sees, from any front
end, with no waiting. Each test uses its own names and its own "machine"
(a home folder holding the token file).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import dns.flags
import dns.message
import dns.rrset
import pytest

from mydns_lab.clerks import Finished
from mydns_lab.clients.query import main as query_main
from mydns_lab.experiments.labprocess import REPO, LabProcess, free_port_range, wait_for
from mydns_lab.protocol import REFUSALS, RecordOp, Status
from mydns_lab.records import json_owner, put_mac
from mydns_lab.service.jsonfront import JsonFrontEnd
from mydns_lab.service.settings import FrontEndCounters

SCRIPT_TIMEOUT_S = 30


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("clients") / "data"
    with LabProcess(data, "--dns-reads", "linearizable", nservers=3, nclerks=3,
                    seed=5) as lab:
        yield lab


@pytest.fixture
def machine(tmp_path: Path) -> dict[str, str]:
    """The environment of a machine whose home folder is a fresh temp folder."""
    env = {k: v for k, v in os.environ.items() if k != "XDG_CONFIG_HOME"}
    env["HOME"] = str(tmp_path / "home")
    return env


def script(name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, name, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=SCRIPT_TIMEOUT_S, stdin=subprocess.DEVNULL)


def servers(lab: LabProcess, *indexes: int) -> list[str]:
    args = []
    for i in indexes or range(lab.nclerks):
        args += ["--server", f"127.0.0.1:{lab.port + i}"]
    return args


def dead_port() -> list[str]:
    """A --server nothing listens on (checked free for UDP and TCP)."""
    return ["--server", f"127.0.0.1:{free_port_range(1, start=40000)}"]


def token_file(env: dict[str, str]) -> Path:
    return Path(env["HOME"]) / ".config" / "mydns" / "tokens.json"


# --- put.py and query.py ------------------------------------------------------------------

@pytest.mark.lab
def test_put_once_claims_then_query_finds_it(lab: LabProcess, machine: dict[str, str]) -> None:
    put = script("put.py", "laptop", "--ip", "10.1.2.3", "--once", *servers(lab), env=machine)
    assert put.returncode == 0, put.stderr
    assert put.stdout == (f"laptop.mydns. -> 10.1.2.3 (claimed via 127.0.0.1:{lab.port}; "
                          "token saved to ~/.config/mydns/tokens.json)\n")
    path = token_file(machine)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    saved = json.loads(path.read_text())["laptop.mydns."]
    assert saved["confirmed"] is True and len(saved["token"]) >= 32

    # Any front end answers at once (linearizable reads).
    for i in range(lab.nclerks):
        query = script("query.py", "laptop", *servers(lab, i))
        assert (query.returncode, query.stdout) == (0, "laptop.mydns. 60 IN A 10.1.2.3\n"), \
            query.stderr

    # The same machine again: its saved token is sent, the record moves.
    again = script("put.py", "laptop", "--ip", "10.1.2.4", "--once", *servers(lab), env=machine)
    assert again.returncode == 0, again.stderr
    assert again.stdout == f"laptop.mydns. -> 10.1.2.4 (updated via 127.0.0.1:{lab.port})\n"
    reused = json.loads(path.read_text())["laptop.mydns."]
    assert reused["token"] == saved["token"] and reused["seq"] > saved["seq"]
    query = script("query.py", "laptop.mydns.", "--type", "A", *servers(lab, 2))
    assert query.stdout == "laptop.mydns. 60 IN A 10.1.2.4\n"


@pytest.mark.lab
def test_another_machine_is_refused_until_given_the_token(lab: LabProcess, tmp_path: Path,
                                                          machine: dict[str, str]) -> None:
    first = script("put.py", "alice-pc", "--ip", "10.2.0.1", "--once", *servers(lab),
                   env=machine)
    assert first.returncode == 0, first.stderr
    other = {**machine, "HOME": str(tmp_path / "other-home")}
    refused = script("put.py", "alice-pc", "--ip", "10.6.6.6", "--once", *servers(lab), env=other)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr == ('error: name "alice-pc" is owned by another key; pass '
                              '--token-file with its token or choose another name (the new '
                              'token stays in ~/.config/mydns/tokens.json; the next run tries '
                              'it again)\n')
    # A refusal proves nothing (replies can be forged): the token is kept.
    assert json.loads(token_file(other).read_text())["alice-pc.mydns."]["confirmed"] is False
    query = script("query.py", "alice-pc", "--type", "A", *servers(lab, 1))
    assert query.stdout == "alice-pc.mydns. 60 IN A 10.2.0.1\n"

    copied = tmp_path / "copied-tokens.json"
    shutil.copy(token_file(machine), copied)
    moved = script("put.py", "alice-pc", "--ip", "10.2.0.2", "--once", "--token-file",
                   str(copied), *servers(lab), env=other)
    assert moved.returncode == 0 and "(updated via" in moved.stdout, moved.stderr
    assert script("query.py", "alice-pc", *servers(lab)).stdout == \
        "alice-pc.mydns. 60 IN A 10.2.0.2\n"


@pytest.mark.lab
def test_a_stale_upload_is_refused_and_the_token_kept(lab: LabProcess, tmp_path: Path,
                                                      machine: dict[str, str]) -> None:
    """The store's refusal with Code "stale" (another machine with the same
    token got further ahead): exit 1, the reason as given, the token kept."""
    ahead = tmp_path / "ahead.json"
    ahead.write_text(json.dumps({"shared.mydns.": {"token": "shared-token", "seq": 10**14,
                                                   "confirmed": False}}))
    first = script("put.py", "shared", "--ip", "10.10.0.1", "--once", "--token-file", str(ahead),
                   *servers(lab), env=machine)
    assert first.returncode == 0, first.stderr
    behind = tmp_path / "behind.json"
    behind.write_text(json.dumps({"shared.mydns.": "shared-token"}))
    stale = script("put.py", "shared", "--ip", "10.10.0.2", "--once", "--token-file",
                   str(behind), *servers(lab), env=machine)
    assert stale.returncode == 1 and stale.stdout == ""
    assert stale.stderr.startswith("error: shared.mydns. refused: stale upload for 'shared': ")
    assert stale.stderr.count("\n") == 1
    assert json.loads(behind.read_text())["shared.mydns."]["token"] == "shared-token"
    query = script("query.py", "shared", "--type", "A", *servers(lab))
    assert query.stdout == "shared.mydns. 60 IN A 10.10.0.1\n"


@pytest.mark.lab
def test_both_families_and_json_output(lab: LabProcess, machine: dict[str, str]) -> None:
    put = script("put.py", "dual", "--ip", "fd00::1", "--ip", "10.9.9.9", "--once",
                 *servers(lab), env=machine)
    assert put.stdout.startswith("dual.mydns. -> 10.9.9.9, fd00::1 (claimed via"), put.stderr
    query = script("query.py", "dual", *servers(lab))
    assert (query.returncode, query.stdout) == \
        (0, "dual.mydns. 60 IN A 10.9.9.9\ndual.mydns. 60 IN AAAA fd00::1\n")
    as_json = json.loads(script("query.py", "dual", "--type", "AAAA", "--json",
                                *servers(lab)).stdout)
    assert as_json["status"] == "found" and as_json["records"] == [
        {"name": "dual.mydns.", "ttl": 60, "type": "AAAA", "value": "fd00::1"}]
    txt = json.loads(script("query.py", "dual", "--type", "TXT", "--json", *servers(lab)).stdout)
    assert txt["records"][0]["value"].startswith("updated=")


@pytest.mark.lab
def test_query_says_which_kind_of_not_found(lab: LabProcess, machine: dict[str, str]) -> None:
    assert script("put.py", "v4only", "--ip", "10.4.4.4", "--once", *servers(lab),
                  env=machine).returncode == 0
    nx = script("query.py", "nosuch", *servers(lab))
    assert (nx.returncode, nx.stdout) == (1, "")
    assert nx.stderr == f"nosuch.mydns.: no such name (NXDOMAIN from 127.0.0.1:{lab.port})\n"
    nodata = script("query.py", "v4only", "--type", "AAAA", *servers(lab))
    assert (nodata.returncode, nodata.stdout) == (1, "")
    assert nodata.stderr == ("v4only.mydns.: the name exists but has no AAAA record "
                             f"(NODATA from 127.0.0.1:{lab.port})\n")
    as_json = script("query.py", "nosuch", "--json", *servers(lab))
    assert as_json.returncode == 1 and json.loads(as_json.stdout)["status"] == "NXDOMAIN"
    outside = script("query.py", "www.example.com.", *servers(lab))
    assert outside.returncode == 2 and "refused www.example.com. A" in outside.stderr


@pytest.mark.lab
def test_fail_over_to_the_next_front_end(lab: LabProcess, machine: dict[str, str]) -> None:
    put = script("put.py", "roamer", "--ip", "10.7.7.7", "--once", "--timeout", "0.3",
                 *dead_port(), *servers(lab, 1), env=machine)
    assert put.returncode == 0, put.stderr
    assert f"(claimed via 127.0.0.1:{lab.port + 1};" in put.stdout
    query = script("query.py", "roamer", "--type", "A", "--timeout", "0.3", *dead_port(),
                   *servers(lab, 2))
    assert (query.returncode, query.stdout) == (0, "roamer.mydns. 60 IN A 10.7.7.7\n")


@pytest.mark.lab
def test_no_server_answering_exits_2_in_bounded_time(machine: dict[str, str]) -> None:
    started = time.monotonic()
    put = script("put.py", "lonely", "--ip", "10.8.8.8", "--once", "--timeout", "0.3",
                 *dead_port(), env=machine)
    assert put.returncode == 2 and put.stdout == ""
    assert put.stderr.startswith("error: no front end answered the upload of lonely.mydns.")
    assert put.stderr.count("\n") == 1
    query = script("query.py", "lonely", "--timeout", "0.3", *dead_port())
    assert query.returncode == 2 and query.stdout == ""
    assert query.stderr.startswith("error: no DNS server answered lonely.mydns.")
    assert time.monotonic() - started < 15


@pytest.mark.lab
def test_without_once_it_keeps_uploading(lab: LabProcess, machine: dict[str, str],
                                         tmp_path: Path) -> None:
    log = tmp_path / "put.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "put.py", "beat", "--ip", "10.3.3.3",
                                 "--interval", "0.2", *servers(lab)], cwd=REPO, env=machine,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: log.read_text().count("(updated via") >= 2, 15,
                 "put.py to send two heartbeats")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    lines = log.read_text().splitlines()
    assert lines[0].startswith("beat.mydns. -> 10.3.3.3 (claimed via")
    assert all(line.startswith("beat.mydns. -> 10.3.3.3 (updated via") for line in lines[1:])


# --- the JSON protocol's ownership rules --------------------------------------------------

@pytest.mark.lab
def test_json_ownership_and_order(lab: LabProcess) -> None:
    def put(i: int, **fields: object) -> dict:
        reply = lab.call(i, {"Type": "Put", "Key": "owned", **fields})
        reply.pop("Id", None)
        return reply

    def stored() -> object:
        return lab.call(2, {"Type": "Query", "Key": "owned"})["Value"]

    token = "owner-token"
    claim = put(0, Value="10.5.0.1", Seq=100, Token=token)
    assert claim == {"Type": "PutOk", "Key": "owned", "Value": "10.5.0.1", "Outcome": "claimed"}
    assert stored() == "10.5.0.1"

    for refused in (put(1, Value="10.6.6.6", Seq=200),                  # no token
                    put(1, Value="10.6.6.6", Seq=200, Token="guess")):  # wrong token
        assert refused["Type"] == "Error" and "is owned by another key" in refused["Error"]
        assert refused["Code"] == "owned"
    stale = put(1, Value="10.6.6.6", Seq=99, Token=token)
    assert stale == {"Type": "Error", "Code": "stale",
                     "Error": "stale upload for 'owned': sequence 99 is older "
                              "than the stored 100; nothing changed"}
    assert stored() == "10.5.0.1"

    # A retry of an upload (same Seq) is accepted.
    assert put(2, Value="10.5.0.1", Seq=100, Token=token) == \
        {"Type": "PutOk", "Key": "owned", "Value": "10.5.0.1", "Outcome": "updated"}
    assert put(1, Value=["10.5.0.2", "fd00::5"], Seq=101, Token=token)["Type"] == "PutOk"
    assert stored() == ["10.5.0.2", "fd00::5"]

    # After the claim the token need not travel: a signed Put (Mac) is the
    # owner's, at any front end; a captured one sets no other value.
    mac = put_mac(json_owner(token), "mydns.", "owned", ["10.5.0.7"], 300)
    assert put(0, Value="10.5.0.7", Seq=300, Mac=mac)["Outcome"] == "updated"
    assert put(2, Value="10.5.0.7", Seq=300, Mac=mac)["Outcome"] == "updated"  # a retry
    forged = put(1, Value="10.6.6.6", Seq=300, Mac=mac)
    assert forged["Code"] == "bad_signature", forged
    assert put(1, Value="10.5.0.8", Seq=301, Token=token)["Type"] == "PutOk"
    assert put(0, Value="10.5.0.7", Seq=300, Mac=mac)["Code"] == "stale"
    assert stored() == "10.5.0.8"

    # A Put carrying a token of its own claims a free name for that token.
    own = put(0, Key="chosen", Value="10.5.0.3", Seq=1, Token="my-own-token")
    assert own == {"Type": "PutOk", "Key": "chosen", "Value": "10.5.0.3", "Outcome": "claimed"}
    assert put(1, Key="chosen", Value="10.5.0.4", Seq=2, Token="my-own-token")["Type"] == "PutOk"


@pytest.mark.lab
def test_open_names_as_the_original_clients_use_them(lab: LabProcess) -> None:
    """The original's clients send no token: their first Put claims an open
    name, and every later one, from any front end, moves it (the update
    after a reboot the service exists for). No token takes an open name."""
    def put(i: int, **fields: object) -> dict:
        reply = lab.call(i, {"Type": "Put", "Key": "gpu-lab-7", **fields})
        reply.pop("Id", None)
        return reply

    assert put(0, Value="10.7.0.1") == {"Type": "PutOk", "Key": "gpu-lab-7", "Value": "10.7.0.1",
                                        "Outcome": "claimed", "Open": True}
    assert put(1, Value="10.7.0.2") == {"Type": "PutOk", "Key": "gpu-lab-7", "Value": "10.7.0.2",
                                        "Outcome": "updated", "Open": True}
    assert lab.call(2, {"Type": "Query", "Key": "gpu-lab-7"})["Value"] == "10.7.0.2"
    taken = put(2, Value="10.6.6.6", Token="mine-now")
    assert taken["Type"] == "Error" and taken["Code"] == "open", taken
    assert lab.call(0, {"Type": "Query", "Key": "gpu-lab-7"})["Value"] == "10.7.0.2"


# --- the JSON front end's Code, from the store's status (no lab) -------------------------

class StoreAnswers:
    """A ClusterClient stand-in: every call finishes with one status and value."""

    def __init__(self, status: str, value: str) -> None:
        self.status, self.value = status, value

    async def call(self, op: RecordOp, timeout_s: float) -> Finished:
        return Finished(op, self.status, self.value, 1)


CODE_OF_REFUSAL = {Status.ERROR: "invalid", Status.OWNED: "owned", Status.STALE: "stale",
                   Status.OPEN: "open", Status.ZONE_FULL: "zone_full"}


@pytest.mark.parametrize("status, code", sorted(CODE_OF_REFUSAL.items()))
@pytest.mark.parametrize("value", ["that name is somebody else's",
                                   "name 'x' is owned by another key; pass the token",
                                   "stale upload for 'x': sequence 1 is older"])
@pytest.mark.parametrize("kind", ["Put", "Query"])
def test_code_comes_from_the_store_status_not_its_words(status: str, code: str, value: str,
                                                        kind: str) -> None:
    """Whatever the reason's words, the reply's Code is the one of the
    status the store refused with, and the words reach the client as given."""
    assert set(CODE_OF_REFUSAL) == REFUSALS, "a refusal without a Code: update this test"
    front = JsonFrontEnd(StoreAnswers(status, value), FrontEndCounters())  # type: ignore[arg-type]
    request = {"Type": kind, "Key": "x", "Value": "10.0.0.1", "Token": "t", "Seq": 1}
    reply = json.loads(asyncio.run(front.handle(json.dumps(request).encode())))
    assert reply == {"Type": "Error", "Error": value, "Code": code}


# --- query.py over TCP after a truncated UDP answer (no lab) ------------------------------

class TruncatingServer:
    """A DNS server on one loopback port: over UDP every answer is empty
    with TC set; over TCP it answers ``name A 10.0.0.1``."""

    def __init__(self) -> None:
        self.udp_queries = 0
        self.tcp_queries = 0
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.port = free_port_range(1, start=45000)
        self.udp.bind(("127.0.0.1", self.port))
        self.tcp.bind(("127.0.0.1", self.port))
        self.tcp.listen()
        self.udp.settimeout(0.1)
        self.tcp.settimeout(0.1)
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._serve_udp),
                        threading.Thread(target=self._serve_tcp)]
        for thread in self.threads:
            thread.start()

    def _serve_udp(self) -> None:
        while not self.stopping.is_set():
            try:
                data, peer = self.udp.recvfrom(4096)
            except socket.timeout:
                continue
            self.udp_queries += 1
            reply = dns.message.make_response(dns.message.from_wire(data))
            reply.flags |= dns.flags.TC
            self.udp.sendto(reply.to_wire(), peer)

    def _serve_tcp(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.tcp.accept()
            except socket.timeout:
                continue
            with conn:
                conn.settimeout(2)
                length = int.from_bytes(conn.recv(2), "big")
                query = dns.message.from_wire(conn.recv(length))
                self.tcp_queries += 1
                reply = dns.message.make_response(query)
                reply.answer.append(dns.rrset.from_text(query.question[0].name, 60, "IN", "A",
                                                        "10.0.0.1"))
                wire = reply.to_wire()
                conn.sendall(len(wire).to_bytes(2, "big") + wire)

    def close(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=5)
        self.udp.close()
        self.tcp.close()


def test_query_retries_over_tcp_when_truncated(capsys: pytest.CaptureFixture[str]) -> None:
    server = TruncatingServer()
    try:
        code = query_main(["big", "--type", "A", "--server", f"127.0.0.1:{server.port}"])
    finally:
        server.close()
    assert (server.udp_queries, server.tcp_queries) == (1, 1)
    assert code == 0 and capsys.readouterr().out == "big.mydns. 60 IN A 10.0.0.1\n"


@pytest.mark.parametrize("argv", [["x", "--type", "MX"], ["x", "--server", "nowhere"],
                                  ["bad..name"]])
def test_query_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    try:
        code = query_main(argv)
    except SystemExit as exc:  # argparse's own refusals
        code = exc.code
    assert code == 2
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.parametrize("name", ["bad name!", "under_score", "dash-", "a.-b"])
def test_query_of_a_name_the_zone_cannot_hold_says_so(name: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Not NXDOMAIN (which reads as "not uploaded yet"), and no question sent:
    the server named does not exist."""
    assert query_main([name, "--server", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: bad name {name!r}: ") and "host names" in err, err
