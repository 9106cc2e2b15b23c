"""``sh run_dns.sh --store etcd``: the launcher starts front ends only, on
a real three-member etcd; put.py claims a name, every front end answers
it, and after every front end has stopped and started again the name is
still there. Flags that cannot work together stop the launch with one line.

Replay: ``pytest tests/test_etcd_lab.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from mydns_lab.experiments.etcdprocess import MACHINES, EtcdCluster, etcd_binary
from mydns_lab.experiments.labprocess import REPO, LabProcess, free_port_range, wait_for
from tests.test_etcd_topology import lookup


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    if etcd_binary() is None:
        pytest.skip("etcd is not installed: install Debian's etcd-server "
                    "(apt-get install etcd-server; run_tests.sh does it as root)")
    with EtcdCluster(tmp_path_factory.mktemp("etcd"), client_port=free_port_range(2, 33000, MACHINES)) as c:
        yield c


def put_py(lab: LabProcess, name: str, address: str, token_file: Path) -> str:
    servers = [arg for host, port in lab.servers() for arg in ("--server", f"{host}:{port}")]
    done = subprocess.run([sys.executable, "put.py", name, "--ip", address, "--once",
                           "--token-file", str(token_file), "--zone", "mydns.", *servers],
                          cwd=REPO, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_lab_on_etcd_keeps_names_across_restarts(etcd: EtcdCluster, tmp_path: Path) -> None:
    flags = ("--store", "etcd", "--etcd-endpoints", etcd.endpoints, "--etcd-prefix", "/lab/")
    with LabProcess(tmp_path / "data", *flags, nclerks=3) as lab:
        said = put_py(lab, "laptop", "10.20.0.1", tmp_path / "token")
        assert "claimed" in said
        wait_for(lambda: all(lookup(s, "laptop") == "10.20.0.1" for s in lab.servers()), 10,
                 f"every front end to answer the claim ({lab.replay})")
        status = json.loads((tmp_path / "data" / "status.json").read_text())
        assert len(status["etcd_members"]) == 3 and any(m["leader"]
                                                        for m in status["etcd_members"])
        stats = lab.stop()
    assert stats["options"]["etcd"] == {"endpoints": etcd.endpoints.split(","),
                                        "prefix": "/lab/"}
    table = lab.output()[lab.output().rindex("final statistics"):]
    rows = dict(line.strip().split("  ", 1) for line in table.splitlines()[1:] if "  " in line)
    assert rows["etcd members up"].strip() == "3 / 3" and "etcd leader (term)" in rows, table
    assert "raft RPCs" not in table and "max term" not in table, table  # none of ours ran
    with LabProcess(tmp_path / "data", *flags, nclerks=3) as lab:
        wait_for(lambda: all(lookup(s, "laptop") == "10.20.0.1" for s in lab.servers()), 10,
                 f"every restarted front end to answer the stored name ({lab.replay})")
        assert "updated" in put_py(lab, "laptop", "10.20.0.2", tmp_path / "token")


@pytest.mark.parametrize("flags, words", [
    (["--store", "etcd"], "--store etcd needs --etcd-endpoints"),
    (["--etcd-endpoints", "http://127.0.0.2:2379"], "needs --store etcd"),
    (["--store", "etcd", "--etcd-endpoints", "127.0.0.2:2379"], "expected client URLs"),
    (["--store", "etcd", "--etcd-endpoints", "http://127.0.0.2:2379", "--crash"],
     "act on our own Raft servers"),
])
def test_flags_that_do_not_fit_stop_the_launch(flags: list[str], words: str) -> None:
    done = subprocess.run([sys.executable, "-m", "mydns_lab", "--no-dashboard", *flags],
                          cwd=REPO, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and words in done.stderr, done.stderr


def test_mydns_frontend_needs_etcd() -> None:
    done = subprocess.run([sys.executable, "-m", "mydns_lab", "frontend", "--store", "raft"],
                          cwd=REPO, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "keeps its records in etcd" in done.stderr, done.stderr
