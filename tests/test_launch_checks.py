"""What the launcher refuses before anything starts, each in one line and
exit status 2: a port in use (naming the program holding it), an address
this host lacks, a bad zone, a data folder another lab holds; and a front
end that still cannot start stops the launch instead of dying silently.

Every lab here listens on loopback ports the test picked; every wait polls
a condition against a deadline; every process started is stopped.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from mydns_lab.__main__ import notes, options_from
from mydns_lab.experiments.labprocess import REPO, LabProcess, free_port_range, wait_for
from mydns_lab.lab.datalock import LOCK_FILE, DataFolderError, DataFolderLock
from mydns_lab.lab import launcher
from mydns_lab.lab.launcher import Lab, LabFailure, LabOptions, StartFailure
from mydns_lab.lab.preflight import host_addresses


def _launch(*argv: str, timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
    """``python -m mydns_lab --no-dashboard`` with ``argv``, run to its end."""
    return subprocess.run([sys.executable, "-m", "mydns_lab", "--no-dashboard", *argv],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout_s)


def _refused(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    """The one stderr line of a launch refused with exit 2, holding ``words``."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(lines) == 1 and all(w in lines[0] for w in words), proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    return lines[0]


def _quick(tmp_path: Path, port: int, *argv: str) -> subprocess.CompletedProcess[str]:
    return _launch("--nservers", "3", "--nclerks", "2", "--port", str(port),
                   "--data-dir", str(tmp_path / "data"), "--dnsDuration", "1", *argv)


def _held(proto: int, port: int) -> socket.socket:
    """A socket of this process holding 127.0.0.1:``port``."""
    sock = socket.socket(socket.AF_INET, proto)
    sock.bind(("127.0.0.1", port))
    if proto == socket.SOCK_STREAM:
        sock.listen()
    return sock


# --- flags ------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, words", [
    (["--zone", "bad zone"], ["--zone", "'bad zone' is not a zone name"]),
    (["--bind", "localhost"], ["--bind", "expected an IP address"]),
    (["--nservers", "101"], ["--nservers 101 is too many"]),
])
def test_bad_flag_is_one_line_exit_2(tmp_path: Path, argv: list[str], words: list[str]) -> None:
    _refused(_quick(tmp_path, free_port_range(2, 39000), *argv), *words)


def test_zone_is_normalised() -> None:
    assert options_from(["--zone", "Example.COM"]).zone == "example.com."


def test_a_wildcard_bind_publishes_this_hosts_address_and_says_so() -> None:
    """``--bind 0.0.0.0`` listens everywhere: the name servers get this
    host's first reachable address (loopback when it has none), and a note
    says which; ``--ns`` chooses instead, without a note."""
    options = options_from(["--bind", "0.0.0.0", "--nclerks", "2"])
    published = options.name_servers[0].ipv4
    assert [s.name for s in options.name_servers] == ["ns1", "ns2"] and published
    assert [n for n in notes(options) if "--bind 0.0.0.0" in n] == [
        f"--bind 0.0.0.0: the zone's name servers are published at {published[0]} (this "
        "host's first address); pass --ns ns1=ADDR to choose"]
    chosen = options_from(["--bind", "0.0.0.0", "--ns", "ns1=192.0.2.53", "--http-port", "0"])
    assert chosen.name_servers[0].ipv4 == ("192.0.2.53",) and notes(chosen) == []


def test_clear_http_off_loopback_gets_a_note() -> None:
    """dyndns2 sends the token with every update: in clear, say so."""
    [note] = notes(options_from(["--http-bind", "0.0.0.0"]))
    assert note.startswith("HTTP on 0.0.0.0 without --http-cert: dyndns2 passwords")
    assert notes(options_from([])) == [], "loopback: nobody else listens"
    assert notes(options_from(["--http-bind", "0.0.0.0", "--http-port", "0"])) == []


def test_even_cluster_gets_a_note_not_an_error() -> None:
    assert notes(options_from(["--nservers", "4"])) == [
        "--nservers 4 tolerates 1 failed server, no more than --nservers 3 does"]
    assert notes(options_from(["--nservers", "5"])) == []


# --- endpoints, checked before anything starts --------------------------------------------

@pytest.mark.parametrize("proto, name", [(socket.SOCK_DGRAM, "UDP"), (socket.SOCK_STREAM, "TCP")])
def test_port_in_use_names_its_holder(tmp_path: Path, proto: int, name: str) -> None:
    port = free_port_range(2, 40000)
    with _held(proto, port + 1):
        proc = _quick(tmp_path, port)
    _refused(proc, f"{name} 127.0.0.1:{port + 1} is already in use", f"(pid {os.getpid()})",
             "--port")
    assert "MyDNS lab" not in proc.stdout and "final statistics" not in proc.stdout
    assert not (tmp_path / "data" / "cluster.json").exists(), "nothing may start"


def test_address_the_host_lacks_is_refused(tmp_path: Path) -> None:
    mine = set(host_addresses())
    absent = next(str(a) for a in ipaddress.ip_network("203.0.113.0/24").hosts()
                  if str(a) not in mine)
    _refused(_quick(tmp_path, free_port_range(2, 41000), "--bind", absent),
             f"--bind {absent} is not an address of this host", "127.0.0.1")


# --- a front end that fails anyway stops the launch ---------------------------------------

def _own_descendants() -> set[int]:
    """This process's descendants but multiprocessing's resource tracker and
    fork server, which the first lab starts and which live as long as we do
    (the launcher's process, in a real lab)."""
    return {p.pid for p in psutil.Process().children(recursive=True)
            if not any(helper in " ".join(_cmdline(p))
                       for helper in ("resource_tracker", "forkserver"))}


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def _start_expecting_failure(lab: Lab, before: set[int]) -> str:
    """``lab.start()`` must raise StartFailure; stop everything, return its words."""
    try:
        with pytest.raises(StartFailure) as failure:
            lab.start()
    finally:
        started = _own_descendants() - before
        lab.stop()

        def gone() -> bool:
            return not any(psutil.pid_exists(p) and
                           psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in started)
        wait_for(gone, 5, f"the lab's processes {sorted(started)} to exit")
    return str(failure.value)


@pytest.mark.lab
def test_port_taken_after_the_check_stops_the_launch(tmp_path: Path) -> None:
    """The port is free when ``prepare`` checks it and taken before the
    front end binds: the front end says so and ``start`` raises."""
    port = free_port_range(2, 42000)
    lab = Lab(LabOptions(nservers=3, nclerks=2, port=port, data_dir=tmp_path / "data",
                         dashboard=False, fsync=False, seed=1))
    before = _own_descendants()
    lab.prepare()
    with _held(socket.SOCK_DGRAM, port + 1):
        text = _start_expecting_failure(lab, before)
    assert text.startswith(f"front end 1: UDP 127.0.0.1:{port + 1} is already in use"), text
    assert f"(pid {os.getpid()})" in text, text


@pytest.mark.lab
def test_front_end_that_cannot_start_reports_why(tmp_path: Path) -> None:
    """A zone the flags would refuse, given to the launcher directly: the
    front ends' own failure reaches the launcher, named."""
    lab = Lab(LabOptions(nservers=3, nclerks=2, port=free_port_range(2, 43000),
                         data_dir=tmp_path / "data", zone="bad zone", dashboard=False,
                         fsync=False, seed=2))
    before = _own_descendants()
    lab.prepare()
    text = _start_expecting_failure(lab, before)
    assert "could not start: InvalidRecord" in text and "'bad zone'" in text, text


def test_no_fork_server_is_one_clear_failure(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The fork server needs a writable temporary folder; without one the
    launch stops in ``prepare`` saying so, and lets go of the data folder."""
    def no_room() -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(launcher.forkserver, "ensure_running", no_room)
    lab = Lab(LabOptions(nservers=3, nclerks=1, data_dir=tmp_path / "data", dashboard=False))
    with pytest.raises(LabFailure, match="cannot start the fork server .*No space left on "
                                         "device.*set TMPDIR to choose"):
        lab.prepare()
    DataFolderLock.take(tmp_path / "data").release()  # free again


# --- one lab per data folder ---------------------------------------------------------------

def test_lock_names_its_holder_and_goes_with_release(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    lock = DataFolderLock.take(folder)
    with pytest.raises(DataFolderError, match=f"in use by another lab \\(pid {os.getpid()}\\)"):
        DataFolderLock.take(folder)
    lock.release()
    DataFolderLock.take(folder).release()


def test_lock_of_a_killed_process_is_free(tmp_path: Path) -> None:
    """The kernel drops the flock when its holder dies, even by SIGKILL."""
    folder = tmp_path / "data"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from mydns_lab.lab.datalock import DataFolderLock; "
         "DataFolderLock.take(Path(sys.argv[1])); time.sleep(60)", str(folder)], cwd=REPO)
    try:
        lock_file = folder / LOCK_FILE
        wait_for(lambda: lock_file.exists() and lock_file.read_text().strip() == str(holder.pid),
                 10, "the holder to take the lock")
        with pytest.raises(DataFolderError, match=f"pid {holder.pid}"):
            DataFolderLock.take(folder)
    finally:
        holder.kill()
        holder.wait(timeout=10)
    DataFolderLock.take(folder).release()


@pytest.mark.lab
def test_second_lab_on_a_data_folder_is_refused(tmp_path: Path) -> None:
    """Even with --fresh, the second lab deletes nothing and starts nothing."""
    data = tmp_path / "data"
    with LabProcess(data, seed=21) as lab:
        line = _refused(_launch("--nservers", "3", "--nclerks", "2", "--data-dir", str(data),
                                "--port", str(free_port_range(2, 44000)), "--fresh",
                                "--dnsDuration", "1"),
                        f"data folder {data} is in use by another lab (pid {lab.proc.pid})")
        assert "--data-dir" in line
        assert (data / "cluster.json").exists()
        assert all((data / f"server-{n}").is_dir() for n in (1, 2, 3))
        assert (data / LOCK_FILE).read_text().strip() == str(lab.proc.pid)
        assert lab.call(0, {"Type": "Query", "Key": "still-here"})["Type"] == "Response"
