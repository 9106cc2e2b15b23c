"""The real dyndns2 clients against a running lab: ddclient 3.10 and inadyn
2.10 (Debian packages ``ddclient``, ``inadyn``; run_tests.sh installs
them), configured as docs/service.md shows, update names that ``dig`` then
answers; a wrong password gets ``badauth`` and changes nothing.

Each client runs once in the foreground (``ddclient -daemon=0
-foreground``, ``inadyn --once --foreground``) and is waited for; its
configuration, cache and (for inadyn) cache folder live in the test's
temporary folder.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from mydns_lab.experiments.labprocess import LabProcess, wait_for
from tests.realtools import need

pytestmark = pytest.mark.lab

CLIENT_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabProcess]:
    need("dig")
    with LabProcess(tmp_path_factory.mktemp("dyndns") / "data", nservers=3, nclerks=2,
                    seed=13) as running:
        yield running


def dig(lab: LabProcess, name: str) -> list[str]:
    out = subprocess.run(["dig", "@127.0.0.1", "-p", str(lab.port), f"{name}.mydns.", "A",
                          "+short", "+time=2", "+tries=1"],
                         capture_output=True, text=True, timeout=10).stdout
    return out.split()


def wait_for_address(lab: LabProcess, name: str, address: str) -> None:
    """The front end's copy follows the store by a watch: poll DNS."""
    wait_for(lambda: dig(lab, name) == [address], 10,
             f"dig {name}.mydns. to answer {address} ({lab.replay})")


def run(args: list[str]) -> tuple[int, str]:
    done = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=CLIENT_TIMEOUT_S, stdin=subprocess.DEVNULL)
    return done.returncode, done.stdout


def private_file(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)  # it holds the password, as the clients' manuals ask
    return path


# --- ddclient -------------------------------------------------------------------------------

def ddclient_config(lab: LabProcess, password: str, address: str, hosts: str) -> str:
    """docs/service.md's example, with a fixed address (``use=ip``)."""
    return (f"ssl=no\n"
            f"use=ip, ip={address}\n"
            f"protocol=dyndns2\n"
            f"server=127.0.0.1:{lab.http_port}\n"
            f"login=router\n"
            f"password='{password}'\n"
            f"{hosts}\n")


def ddclient(tmp_path: Path, lab: LabProcess, password: str, address: str,
             hosts: str, cache: str = "ddclient.cache") -> tuple[int, str]:
    program = need("ddclient")
    config = private_file(tmp_path / "ddclient.conf",
                          ddclient_config(lab, password, address, hosts))
    return run([program, "-daemon=0", "-foreground", "-file", str(config),
                "-cache", str(tmp_path / cache), "-verbose"])


def test_ddclient_claims_updates_and_is_told_nochg(tmp_path: Path, lab: LabProcess) -> None:
    # Both hosts go in one request (ddclient groups and sorts them), answered line by line.
    hosts = "dd-laptop.mydns,dd-gpu"
    code, out = ddclient(tmp_path, lab, "dd-token", "192.0.2.11", hosts)
    assert code == 0, out
    assert "hostname=dd-gpu,dd-laptop.mydns&myip=192.0.2.11" in out, out
    for name in ("dd-laptop", "dd-gpu"):
        assert f"SUCCESS:  updating {name}" in out, out
        wait_for_address(lab, name, "192.0.2.11")
    # A new address (a new cache: ddclient waits 30 s between updates of a name).
    code, out = ddclient(tmp_path, lab, "dd-token", "192.0.2.12", hosts, cache="second.cache")
    assert code == 0 and "good: IP address set to 192.0.2.12" in out, out
    wait_for_address(lab, "dd-laptop", "192.0.2.12")
    # A forgotten cache: ddclient sends the same address, and is told nochg.
    code, out = ddclient(tmp_path, lab, "dd-token", "192.0.2.12", hosts, cache="third.cache")
    assert code == 0 and "RECEIVE:  nochg 192.0.2.12" in out, out


def test_ddclient_with_a_wrong_password_gets_badauth_and_changes_nothing(
        tmp_path: Path, lab: LabProcess) -> None:
    code, out = ddclient(tmp_path, lab, "dd-owner", "192.0.2.31", "dd-nas.mydns.")
    assert code == 0, out
    wait_for_address(lab, "dd-nas", "192.0.2.31")
    code, out = ddclient(tmp_path, lab, "not-the-token", "192.0.2.66", "dd-nas.mydns.",
                         cache="thief.cache")
    assert code != 0 and "badauth: Bad authorization" in out, out
    assert dig(lab, "dd-nas") == ["192.0.2.31"]


# --- inadyn ---------------------------------------------------------------------------------

def inadyn_config(lab: LabProcess, password: str, address: str) -> str:
    """docs/service.md's example, with a fixed address (``checkip-command``)."""
    return ("period = 300\n"
            "custom mydns {\n"
            "    ssl             = false\n"
            "    username        = router\n"
            f"    password        = \"{password}\"\n"
            f"    checkip-command = \"/bin/echo {address}\"\n"
            f"    ddns-server     = \"127.0.0.1:{lab.http_port}\"\n"
            "    ddns-path       = \"/nic/update?hostname=%h&myip=%i\"\n"
            "    hostname        = { \"ina-router.mydns\", \"ina-nas\" }\n"
            "}\n")


def inadyn(tmp_path: Path, lab: LabProcess, password: str, address: str) -> tuple[int, str]:
    program = need("inadyn")
    config = private_file(tmp_path / "inadyn.conf", inadyn_config(lab, password, address))
    cache = tmp_path / "inadyn-cache"
    shutil.rmtree(cache, ignore_errors=True)  # each run a first run: the update is sent
    cache.mkdir()
    return run([program, "--once", "--foreground", "--no-pidfile", "-f", str(config),
                "--cache-dir", str(cache), "-l", "info"])


def test_inadyn_claims_and_updates_names(tmp_path: Path, lab: LabProcess) -> None:
    code, out = inadyn(tmp_path, lab, "ina-token", "192.0.2.21")
    assert code == 0, out
    for name in ("ina-router", "ina-nas"):
        assert f"Successful alias table update for {name}" in out, out
        wait_for_address(lab, name, "192.0.2.21")
    code, out = inadyn(tmp_path, lab, "ina-token", "192.0.2.22")
    assert code == 0, out
    wait_for_address(lab, "ina-router", "192.0.2.22")
    wait_for_address(lab, "ina-nas", "192.0.2.22")
    # A wrong password: inadyn stops at badauth, and the names stay.
    code, out = inadyn(tmp_path, lab, "not-the-token", "192.0.2.66")
    assert code != 0 and "badauth" in out, out
    assert dig(lab, "ina-router") == ["192.0.2.22"] and dig(lab, "ina-nas") == ["192.0.2.22"]
