"""The lab harness on real processes: flags, the crash x unreliable cells,
persistence across restarts and SIGKILL, and no process left behind.

Replay a failure with the command in its message (the launcher's flags).
"""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from mydns_lab.__main__ import options_from
from mydns_lab.clients.jsonclient import NoAnswer
from mydns_lab.experiments.labprocess import (REPO, LabProcess, fault_flags, free_port_range,
                                              wait_for)

pytestmark = pytest.mark.lab


def _launch(*argv: str) -> subprocess.CompletedProcess[str]:
    """``python -m mydns_lab`` with ``argv``, run to its end."""
    return subprocess.run([sys.executable, "-m", "mydns_lab", *argv], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def _start_on(data: Path, nservers: int) -> subprocess.CompletedProcess[str]:
    """The lab started for a second on an existing data folder."""
    return _launch("--no-dashboard", "--nservers", str(nservers), "--data-dir", str(data),
                   "--dnsDuration", "1")


# --- flags -----------------------------------------------------------------------------

@pytest.mark.parametrize("argv, crash, unreliable", [
    ([], False, False),
    (["--crash"], True, False),
    (["--crash", "true"], True, False),
    (["--crash=true"], True, False),
    (["--crash", "false"], False, False),
    (["--crash", "true", "--unreliable", "true"], True, True),   # the original's example
    (["-crash", "-unreliable=1"], True, True),
    (["--unreliable", "--crash", "no"], False, True),
])
def test_boolean_flag_forms(argv: list[str], crash: bool, unreliable: bool) -> None:
    options = options_from(argv)
    assert (options.crash, options.unreliable) == (crash, unreliable), argv


def test_original_flags() -> None:
    options = options_from(["--nservers", "3", "--nclerks", "2", "--dnsDuration", "20"])
    assert (options.nservers, options.nclerks, options.dns_duration) == (3, 2, 20.0)


@pytest.mark.parametrize("argv, message", [
    (["--bogus"], "unrecognized arguments"),
    (["--crash", "maybe"], "expected true or false"),
    (["--nservers", "0"], "must be at least 1"),
    (["--nservers", "x"], "expected a whole number"),
    (["--dnsDuration", "-1"], "must not be negative"),
    (["--port", "70000"], "not a port"),
])
def test_bad_flags_exit_2_with_one_line(argv: list[str], message: str) -> None:
    proc = _launch(*argv)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr


# --- real processes ---------------------------------------------------------------------

def _put_all(lab: LabProcess, names: dict[str, str], rng: random.Random,
             tokens: dict[str, str] | None = None, seq: int = 1) -> dict[str, str]:
    """Upload every name through a random front end until acknowledged;
    returns name -> token. Retries carry the same token and sequence
    number, so a retried put takes effect once."""
    tokens = {} if tokens is None else tokens
    for name, address in names.items():
        request = {"Type": "Put", "Key": name, "Value": address, "Seq": seq}
        if name in tokens:
            request["Token"] = tokens[name]
        deadline = time.monotonic() + 20
        while True:
            assert time.monotonic() < deadline, f"put {name} never succeeded ({lab.replay})"
            try:
                reply = lab.call(rng.randrange(lab.nclerks), request)
            except NoAnswer:
                continue
            if reply["Type"] == "PutOk":
                tokens.setdefault(name, reply.get("Token", ""))
                break
            # A first put that claimed the name but whose answer was lost
            # leaves it owned by a token we never saw: the only legal error.
            assert "did not answer" in reply.get("Error", ""), (name, reply, lab.replay)
    return tokens


def _read_all(lab: LabProcess, names: dict[str, str], rng: random.Random) -> None:
    for name, address in names.items():
        deadline = time.monotonic() + 20
        while True:
            assert time.monotonic() < deadline, f"query {name} never answered ({lab.replay})"
            try:
                reply = lab.call(rng.randrange(lab.nclerks), {"Type": "Query", "Key": name})
            except NoAnswer:
                continue
            if reply["Type"] == "Response":
                assert reply["Value"] == address, (name, reply, lab.replay)
                break


@pytest.mark.parametrize("crash", [False, True])
@pytest.mark.parametrize("unreliable", [False, True])
def test_cell_puts_and_reads_through_json(tmp_path: Path, crash: bool, unreliable: bool) -> None:
    """Rounds of acknowledged updates, each read back through a random front
    end, for long enough that the crash controller kills servers."""
    rng = random.Random(7)
    with LabProcess(tmp_path / "data", *fault_flags(crash, unreliable), nservers=5, nclerks=3,
                    seed=7) as lab:
        tokens: dict[str, str] = {}
        started = time.monotonic()
        rounds = 0
        while rounds < 3 or time.monotonic() - started < 6:
            rounds += 1
            names = {f"host{i}": f"10.{rounds % 250}.{i}.{rng.randrange(1, 255)}" for i in range(6)}
            _put_all(lab, names, rng, tokens, seq=rounds)
            _read_all(lab, names, rng)
        stats = lab.stop()
    assert stats["puts"] >= rounds * 6, stats
    if crash:
        assert stats["crashes_injected"] >= 2, stats
    else:
        assert stats["crashes_injected"] == 0
    if unreliable:
        assert stats["packets"]["dropped"] > 0, stats
        # Every message met the fault layer: none took a direct pipe.
        assert stats["direct"]["links"] == {}, stats
    else:
        # A reliable network carries Raft and client traffic on direct pipes.
        assert {"raft", "request", "reply"} <= set(stats["direct"]["links"]), stats
        if not crash:
            assert stats["packets"]["dropped"] == 0, stats


def test_names_survive_a_full_restart(tmp_path: Path) -> None:
    rng = random.Random(3)
    names = {f"keep{i}": f"192.0.2.{i + 1}" for i in range(8)}
    data = tmp_path / "data"
    with LabProcess(data, seed=3) as lab:
        _put_all(lab, names, rng)
    with LabProcess(data, seed=4, port=free_port_range(2, 30000)) as lab:
        _read_all(lab, names, rng)


def test_acknowledged_puts_survive_sigkill_of_every_process(tmp_path: Path) -> None:
    rng = random.Random(5)
    names = {f"power{i}": f"198.51.100.{i + 1}" for i in range(8)}
    data = tmp_path / "data"
    lab = LabProcess(data, seed=5).start()
    try:
        _put_all(lab, names, rng)
    finally:
        lab.kill_everything()
    with LabProcess(data, seed=6, port=free_port_range(2, 32000)) as lab:
        _read_all(lab, names, rng)


def test_fresh_starts_empty(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with LabProcess(data, seed=8) as lab:
        _put_all(lab, {"gone": "203.0.113.9"}, random.Random(8))
    with LabProcess(data, "--fresh", seed=9, port=free_port_range(2, 34000)) as lab:
        assert lab.call(0, {"Type": "Query", "Key": "gone"})["Value"] == ""


def test_run_dns_sh_duration_exits_0_with_table(tmp_path: Path) -> None:
    port = free_port_range(2, 36000)
    proc = subprocess.run(["sh", "run_dns.sh", "--dnsDuration", "3", "--no-dashboard",
                           "--nservers", "3", "--nclerks", "2", "--port", str(port),
                           "--data-dir", str(tmp_path / "d"), "--crash", "--unreliable"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "final statistics" in proc.stdout and "total packets" in proc.stdout
    assert f"DNS and JSON on UDP and TCP 127.0.0.1:{port}..{port + 1}" in proc.stdout, proc.stdout
    assert (tmp_path / "d" / "last-run.json").exists()


def test_wiped_server_rejoins_and_names_survive(tmp_path: Path) -> None:
    """A server whose folder is deleted comes back recovering and catches up;
    the cluster keeps every name."""
    rng = random.Random(12)
    names = {f"wipe{i}": f"192.0.2.{i + 50}" for i in range(6)}
    data = tmp_path / "data"
    with LabProcess(data, seed=12) as lab:
        _put_all(lab, names, rng)
    shutil.rmtree(data / "server-2")
    with LabProcess(data, seed=13, port=free_port_range(2, 38000)) as lab:
        _read_all(lab, names, rng)
        marker = data / "server-2" / "RECOVERING"
        wait_for(lambda: not marker.exists(), 20, "s2 to catch up and drop its marker")


def test_too_many_lost_folders_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with LabProcess(data, seed=14) as lab:
        _put_all(lab, {"x": "192.0.2.1"}, random.Random(14))
    shutil.rmtree(data / "server-1")
    shutil.rmtree(data / "server-2")
    proc = _start_on(data, nservers=3)
    assert proc.returncode == 2
    assert "a majority is needed" in proc.stderr


def test_damaged_server_folder_is_refused_in_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with LabProcess(data, seed=16):
        pass
    (data / "server-1" / "hardstate").write_bytes(b"garbage")
    proc = _start_on(data, nservers=3)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "server-1/hardstate" in proc.stderr and "restore the folder" in proc.stderr, proc.stderr


def test_cluster_size_mismatch_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with LabProcess(data, seed=15):
        pass
    proc = _start_on(data, nservers=5)
    assert proc.returncode == 2
    assert "--nservers 3" in proc.stderr


def test_sigint_stops_a_lab_started_in_the_background(tmp_path: Path) -> None:
    """`sh run_dns.sh &` starts the lab with SIGINT ignored (what a shell
    does to background jobs); `kill -INT` must still stop it cleanly."""
    lab = LabProcess(tmp_path / "data", seed=8)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited by the launcher
    try:
        lab.launch()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert lab.proc is not None
    try:
        lab.wait_until_serving()
        pids = lab.started_pids
        lab.proc.send_signal(signal.SIGINT)
        assert lab.proc.wait(timeout=10) == 0, lab.output()[-2000:]
        lab.assert_gone(pids)
        assert "final statistics" in lab.output()
    finally:
        if lab.proc.poll() is None:
            lab.kill_everything()


def test_a_second_sigterm_does_not_break_off_the_stop(tmp_path: Path) -> None:
    """An impatient operator (or systemd, or a supervisor) sends SIGTERM
    twice: the launcher still stops every child, prints its table and
    exits 0."""
    lab = LabProcess(tmp_path / "data", seed=7).start()
    assert lab.proc is not None
    pids = lab.started_pids | lab.descendants()
    try:
        children = lab.descendants()
        lab.proc.send_signal(signal.SIGTERM)
        # The second one lands inside the stop: once the first children are gone.
        wait_for(lambda: len(lab.descendants()) < len(children), 5, "the stop to begin")
        lab.proc.send_signal(signal.SIGTERM)
        assert lab.proc.wait(timeout=10) == 0, lab.output()[-2000:]
        lab.assert_gone(pids)
        assert "final statistics" in lab.output()
    finally:
        for pid in pids:  # what a broken stop left behind goes with the test
            try:
                process = psutil.Process(pid)
                if "mydns" in " ".join(process.cmdline()):  # ours, not a reused pid
                    process.kill()
            except psutil.Error:
                pass


def test_a_killed_router_stops_the_lab_with_one_clear_line(tmp_path: Path) -> None:
    """The router carries every report and restart: when it dies the lab
    stops, names it on stderr (no traceback), exits 1 and leaves nothing."""
    lab = LabProcess(tmp_path / "data", seed=9).start()
    assert lab.proc is not None
    pids = lab.started_pids | lab.descendants()
    try:
        router = next(p for p in map(psutil.Process, lab.descendants())
                      if p.cmdline()[:1] == ["mydns router"])
        router.kill()
        assert lab.proc.wait(timeout=10) == 1, lab.output()[-2000:]
        lab.assert_gone(pids)
        output = lab.output()
        assert f"mydns: error: the router (pid {router.pid}) exited with code -9" in output, \
            output[-2000:]
        assert "Traceback" not in output, output[-3000:]
    finally:
        if lab.proc.poll() is None:
            lab.kill_everything()
