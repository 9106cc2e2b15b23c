"""Who may read the data folder and the keys file.

The data folder is its owner's alone: the folder and every folder in it
0700, every file 0600, whatever the umask (the tests set a loose one). A
keys file that group or others may read (or change) stops the launch with
one line saying how to fix it, and exit status 2.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from mydns_lab.core.messages import Entry, HardState, Snapshot
from mydns_lab.experiments.labprocess import REPO, LabProcess, free_port_range
from mydns_lab.lab.datalock import LOCK_FILE, DataFolderLock
from mydns_lab.storage.files import FileStorage, mark_recovering

KEYS = "laptop   a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s=\n"


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """A umask that lets group and others read (the common default)."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def exposed(folder: Path) -> list[str]:
    """Everything in ``folder`` (itself included) that group or others may use."""
    found = []
    for path in [folder, *folder.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if mode & 0o077:
            found.append(f"{path.relative_to(folder.parent)} {mode:04o}")
    return found


def test_storage_creates_private_folders_and_files(tmp_path: Path, loose_umask: None) -> None:
    folder = tmp_path / "data" / "server-1"
    folder.parent.mkdir(mode=0o700)
    with FileStorage(folder, fsync=False) as storage:
        storage.save(HardState(1, 1, 0), [Entry(1, 1, b"x")], None)
        storage.save(HardState(1, 1, 1), [], Snapshot(1, 1, b"state"))  # a new generation
    mark_recovering(tmp_path / "data" / "server-2")
    assert exposed(tmp_path / "data") == []


def test_the_lock_makes_the_data_folder_private(tmp_path: Path, loose_umask: None) -> None:
    folder = tmp_path / "data"
    folder.mkdir(mode=0o755)
    (folder / LOCK_FILE).write_text("1\n")   # left 0644 by an older lab
    lock = DataFolderLock.take(folder)
    try:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert stat.S_IMODE((folder / LOCK_FILE).stat().st_mode) == 0o600
    finally:
        lock.release()
    created = tmp_path / "new" / "data"
    DataFolderLock.take(created).release()
    assert exposed(created) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads and writes anything")
def test_the_lock_never_adds_permissions(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / LOCK_FILE).write_text("")
    folder.chmod(0o555)
    try:
        DataFolderLock.take(folder).release()
        assert stat.S_IMODE(folder.stat().st_mode) == 0o500
    finally:
        folder.chmod(0o700)


@pytest.mark.parametrize("mode, access", [(0o600, ""), (0o400, ""), (0o700, ""),
                                          (0o644, "readable"), (0o640, "readable"),
                                          (0o604, "readable"), (0o620, "writable")])
def test_keys_file_modes(tmp_path: Path, mode: int, access: str) -> None:
    from mydns_lab.lab.launcher import keys_file_problem

    keys = tmp_path / "keys.txt"
    keys.write_text(KEYS)
    keys.chmod(mode)
    problem = keys_file_problem(keys)
    if not access:
        assert problem == ""
        return
    assert problem == (f"keys file {keys} is {access} by group or others (mode {mode:04o}), "
                       f"and its secrets sign updates; make it private: chmod 600 {keys}")


def test_a_keys_file_others_can_read_stops_the_launch(tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text(KEYS)
    keys.chmod(0o644)
    proc = subprocess.run([sys.executable, "-m", "mydns_lab", "--no-dashboard", "--nservers", "3",
                           "--nclerks", "2", "--port", str(free_port_range(2, 39500)),
                           "--data-dir", str(tmp_path / "data"), "--dnsDuration", "1",
                           "--keys", str(keys)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.splitlines() == [
        f"mydns: error: keys file {keys} is readable by group or others (mode 0644), and its "
        f"secrets sign updates; make it private: chmod 600 {keys}"], proc.stderr
    assert not (tmp_path / "data" / "server-1").exists()   # nothing ran


@pytest.mark.lab
def test_after_a_lab_run_nothing_in_the_data_folder_is_open_to_others(tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text(KEYS)
    keys.chmod(0o600)
    data = tmp_path / "data"
    data.mkdir(mode=0o755)   # as a user (or LabProcess) would make it first
    old = os.umask(0o022)
    try:
        with LabProcess(data, "--keys", str(keys), nservers=3, nclerks=2, seed=5) as lab:
            reply = lab.call(0, {"Type": "Put", "Key": "desktop", "Value": "10.7.0.1",
                                 "Token": "t", "Seq": 1})
            assert reply["Type"] == "PutOk", reply
    finally:
        os.umask(old)
    names = {p.name for p in data.rglob("*")}
    assert {"lab.lock", "cluster.json", "status.json", "last-run.json", "hardstate"} <= names
    assert exposed(data) == []
