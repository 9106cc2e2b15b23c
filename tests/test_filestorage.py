"""FileStorage against MemoryStorage, torn writes, crashes and damage.

Random tests draw everything from ``random.Random(seed)``; a failure names
its seed and the command that replays just that seed.
"""

from __future__ import annotations

import os
import random
import shutil
import stat
import struct
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from mydns_lab.core.messages import Entry, HardState, Snapshot
from mydns_lab.storage import files as filestorage
from mydns_lab.storage.base import ENTRY_OVERHEAD_BYTES, MemoryStorage, PersistedState, apply_save
from mydns_lab.storage.files import CorruptStorageError, FileStorage, StorageError

SEED_ENV = "FILESTORAGE_SEED"

Save = tuple[HardState | None, list[Entry], Snapshot | None]


# --- helpers ----------------------------------------------------------------------


def for_each_seed(test_name: str, count: int, check: Callable[[int], None]) -> None:
    """Run ``check(seed)`` for ``count`` seeds, or only for $FILESTORAGE_SEED."""
    seeds = [int(os.environ[SEED_ENV])] if SEED_ENV in os.environ else range(count)
    for seed in seeds:
        try:
            check(seed)
        except Exception as exc:
            raise AssertionError(
                f"seed {seed} failed; replay with: {SEED_ENV}={seed} "
                f".venv/bin/python -m pytest tests/test_filestorage.py -k {test_name}") from exc


def copy_state(state: PersistedState) -> PersistedState:
    return PersistedState(state.hard_state, state.snapshot, list(state.entries))


def expected_size(state: PersistedState) -> int:
    """size_bytes() of a storage holding ``state``, as MemoryStorage counts."""
    return sum(len(e.data) + ENTRY_OVERHEAD_BYTES for e in state.entries) + ENTRY_OVERHEAD_BYTES


def random_entries(rng: random.Random, first: int, count: int) -> list[Entry]:
    return [Entry(rng.randint(1, 9), first + i, rng.randbytes(rng.randint(0, 40)))
            for i in range(count)]


def random_snapshot(rng: random.Random, state: PersistedState) -> Snapshot:
    """A snapshot that matches the log at its index, or one that does not."""
    first = state.snapshot.index + 1
    last = state.snapshot.index + len(state.entries)
    data = rng.randbytes(rng.randint(0, 60))
    if state.entries and rng.random() < 0.6:
        index = rng.randint(first, last)
        return Snapshot(index, state.entries[index - first].term, data)
    # Past the log, or at an index whose term differs: the log is dropped.
    return Snapshot(rng.randint(first, last + 5), rng.randint(10, 20), data)


def random_save(rng: random.Random, state: PersistedState, snapshots: bool = True) -> Save:
    """One save() call that is valid against ``state``."""
    hard_state = None
    roll = rng.random()
    if roll < 0.25:
        old = state.hard_state
        hard_state = HardState(old.term + rng.randint(0, 2), rng.randint(0, 3), old.commit)
    elif roll < 0.5:
        # Raft never lowers a commit index.
        hard_state = HardState(state.hard_state.term, state.hard_state.vote,
                               rng.randint(state.hard_state.commit, max(
                                   state.hard_state.commit,
                                   state.snapshot.index + len(state.entries) + 3)))
    snapshot = random_snapshot(rng, state) if snapshots and rng.random() < 0.12 else None
    after = copy_state(state)
    apply_save(after, None, [], snapshot)
    entries: list[Entry] = []
    if rng.random() < 0.7:
        end = after.snapshot.index + len(after.entries) + 1
        first = end if rng.random() < 0.6 else rng.randint(after.snapshot.index + 1, end)
        entries = random_entries(rng, first, rng.randint(1, 6))
    return hard_state, entries, snapshot


def reopen(storage: FileStorage) -> FileStorage:
    storage.close()
    return FileStorage.open(storage.directory, fsync=False)


def log_file(directory: Path) -> Path:
    (path,) = directory.glob("log-*")
    return path


def mid_state(before: PersistedState, after: PersistedState) -> PersistedState:
    """What a crash leaves once hardstate is written but the log is not."""
    state = copy_state(before)
    state.hard_state = HardState(after.hard_state.term, after.hard_state.vote,
                                 before.hard_state.commit)
    return state


def assert_lazy_commit_equal(loaded: PersistedState, want: PersistedState, where: object) -> None:
    """Equal but for the commit index, which may be older (it is lazy)."""
    assert (loaded.snapshot, loaded.entries) == (want.snapshot, want.entries), where
    assert loaded.hard_state.term == want.hard_state.term, where
    assert loaded.hard_state.vote == want.hard_state.vote, where
    assert loaded.hard_state.commit <= want.hard_state.commit, where


def assert_same(storage: FileStorage, memory: MemoryStorage) -> None:
    """Same state, except that the commit index is persisted lazily: after
    a reopen it may be older than the last one saved, never newer."""
    assert_lazy_commit_equal(storage.load(), memory.load(), "FileStorage vs MemoryStorage")
    assert storage.size_bytes() == memory.size_bytes()


# --- round trip -------------------------------------------------------------------


def test_round_trip_matches_memory_storage(tmp_path: Path) -> None:
    def check(seed: int) -> None:
        rng = random.Random(seed)
        folder = tmp_path / f"seed-{seed}"
        storage = FileStorage(folder, fsync=False)
        memory = MemoryStorage()
        for _ in range(rng.randint(1, 40)):
            call = random_save(rng, memory.load())
            storage.save(*call)
            memory.save(*call)
            assert_same(storage, memory)
            if rng.random() < 0.15:
                storage = reopen(storage)
                assert_same(storage, memory)
        storage = reopen(storage)
        assert_same(storage, memory)
        assert storage.is_empty() == (memory.load() == PersistedState())
        assert len(list(folder.glob("log-*"))) == 1
        storage.close()

    for_each_seed("round_trip", 300, check)


def test_size_bytes_grows_with_appends_and_shrinks_after_snapshot(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path, fsync=False)
    sizes = [storage.size_bytes()]
    for index in range(1, 21):
        storage.save(None, [Entry(1, index, b"x" * 100)], None)
        sizes.append(storage.size_bytes())
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    storage.save(None, [], Snapshot(15, 1, b"state"))
    assert storage.size_bytes() == expected_size(storage.load()) < sizes[-1]
    assert reopen(storage).size_bytes() == storage.size_bytes()


def test_snapshot_bytes_are_read_from_their_file_not_kept(tmp_path: Path) -> None:
    """The mirror names the snapshot; load and snapshot_data read its file,
    before and after a reopen."""
    storage = FileStorage(tmp_path, fsync=False)
    storage.save(HardState(1, 1, 0), [Entry(1, 1, b"a"), Entry(1, 2, b"b")], None)
    storage.save(None, [], Snapshot(2, 1, b"state@2"))

    def check(opened: FileStorage) -> None:
        assert opened._state.snapshot == Snapshot(2, 1)  # no bytes held in memory
        assert opened.load().snapshot == Snapshot(2, 1, b"state@2")
        assert (opened.snapshot_data(2), opened.snapshot_data(1)) == (b"state@2", None)
        assert opened.snapshot_size_bytes() == len(b"state@2")
    check(storage)
    check(reopen(storage))


def test_a_snapshot_file_that_names_another_snapshot_is_an_error(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path, fsync=False)
    storage.save(HardState(1, 1, 0), [Entry(1, 1, b"a"), Entry(1, 2, b"b")], None)
    storage.save(None, [], Snapshot(1, 1, b"state@1"))
    older = (tmp_path / "snapshot-00000001").read_bytes()
    storage.save(None, [], Snapshot(2, 1, b"state@2"))
    (tmp_path / "snapshot-00000002").write_bytes(older)  # intact, but the wrong one
    with pytest.raises(CorruptStorageError, match="snapshot-00000002"):
        storage.load()


def test_log_file_shrinks_after_snapshot(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path, fsync=False)
    storage.save(None, random_entries(random.Random(1), 1, 200), None)
    big = log_file(tmp_path).stat().st_size
    storage.save(None, [], Snapshot(190, storage.load().entries[189].term, b"s"))
    assert log_file(tmp_path).stat().st_size < big / 10
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "log-00000001", "snapshot-00000001"]


# --- the cost of a save ------------------------------------------------------------


class CountingOs:
    """Stands in for ``os`` inside filestorage and counts fsyncs and renames."""

    def __init__(self) -> None:
        self.fsyncs = 0
        self.renames = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def fsync(self, fd: int) -> None:
        self.fsyncs += 1
        os.fsync(fd)

    def replace(self, src: Path, dst: Path) -> None:
        self.renames += 1
        os.replace(src, dst)


@pytest.mark.parametrize("call, fsyncs, renames", [
    ((None, [Entry(1, 1, b"a"), Entry(1, 2, b"b")], None), 1, 0),     # append
    ((HardState(0, 0, 1), [], None), 0, 0),                          # commit only: lazy
    ((HardState(0, 0, 1), [Entry(1, 1, b"a")], None), 1, 0),         # both, one record
    ((HardState(3, 2, 0), [], None), 2, 1),                          # vote: file + folder
    ((HardState(0, 0, 0), [], None), 0, 0),                          # nothing changed
    ((None, [], Snapshot(5, 2, b"s")), 3, 2),                        # new generation
])
def test_save_costs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: Save,
                    fsyncs: int, renames: int) -> None:
    storage = FileStorage(tmp_path, fsync=True)
    counting = CountingOs()
    monkeypatch.setattr(filestorage, "os", counting)
    storage.save(*call)
    assert (counting.fsyncs, counting.renames) == (fsyncs, renames)


# --- torn writes -------------------------------------------------------------------


def last_save_scenario(rng: random.Random, directory: Path
                       ) -> tuple[PersistedState, PersistedState, int, bytes]:
    """Random saves, then one that appends to the log.

    Returns the state a torn last record must load (before the save, with its
    term and vote if it wrote them), the state after it, the log's size
    before it, and the log's bytes after it.
    """
    storage = FileStorage(directory, fsync=False)
    memory = MemoryStorage()
    for _ in range(rng.randint(0, 15)):
        call = random_save(rng, memory.load())
        storage.save(*call)
        memory.save(*call)
    before = memory.load()
    while True:
        call = random_save(rng, before, snapshots=False)
        if call[1]:
            break
    size_before = log_file(directory).stat().st_size
    storage.save(*call)
    memory.save(*call)
    storage.close()
    after = memory.load()
    torn = before
    if (after.hard_state.term, after.hard_state.vote) != (before.hard_state.term,
                                                          before.hard_state.vote):
        torn = mid_state(before, after)
    return torn, after, size_before, log_file(directory).read_bytes()


def load_with_log(directory: Path, content: bytes) -> tuple[PersistedState, int, int]:
    """Open the folder with its log replaced by ``content``: state, size, file size."""
    path = log_file(directory)
    path.write_bytes(content)
    storage = FileStorage.open(directory, fsync=False)
    try:
        return storage.load(), storage.size_bytes(), path.stat().st_size
    finally:
        storage.close()


def test_torn_last_record_loads_state_before_or_after(tmp_path: Path) -> None:
    def check(seed: int) -> None:
        rng = random.Random(seed)
        folder = tmp_path / f"seed-{seed}"
        torn, after, size_before, full = last_save_scenario(rng, folder)
        assert len(full) > size_before
        for cut in range(size_before, len(full) + 1):
            want, want_file = (after, len(full)) if cut == len(full) else (torn, size_before)
            loaded, size, file_size = load_with_log(folder, full[:cut])
            assert_lazy_commit_equal(loaded, want, cut)
            assert (size, file_size) == (expected_size(want), want_file), cut
        for _ in range(6):
            cut = rng.randint(size_before, len(full))
            tail = rng.choice([rng.randbytes(rng.randint(1, 64)), bytes(rng.randint(1, 4096))])
            want = after if cut == len(full) else torn
            assert_lazy_commit_equal(load_with_log(folder, full[:cut] + tail)[0], want, (cut, tail))

    for_each_seed("torn_last_record", 25, check)


def test_storage_keeps_working_after_dropping_a_torn_tail(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path, fsync=False)
    storage.save(None, [Entry(1, 1, b"one")], None)
    storage.save(None, [Entry(1, 2, b"two")], None)
    storage.close()
    path = log_file(tmp_path)
    path.write_bytes(path.read_bytes()[:-3])
    storage = FileStorage.open(tmp_path, fsync=False)
    storage.save(None, [Entry(2, 2, b"again")], None)
    expected = [Entry(1, 1, b"one"), Entry(2, 2, b"again")]
    assert storage.load().entries == expected
    assert reopen(storage).load().entries == expected


# --- crashes at every step ------------------------------------------------------------


class Crash(Exception):
    """The simulated power cut."""


class CrashingOs:
    """Stands in for ``os`` inside filestorage; the ``crash_at``-th change crashes.

    Changes are writes, renames and removals. A crashing write first writes
    half its bytes, as a torn write would.
    """

    def __init__(self, crash_at: int) -> None:
        self.left = crash_at
        self.crashed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def _step(self) -> None:
        if self.left == 0:
            self.crashed = True
            raise Crash()
        self.left -= 1

    def write(self, fd: int, data: bytes) -> int:
        if self.left == 0:
            os.write(fd, bytes(data[:len(data) // 2]))
        self._step()
        return os.write(fd, data)

    def replace(self, src: Path, dst: Path) -> None:
        self._step()
        os.replace(src, dst)

    def unlink(self, path: Path) -> None:
        self._step()
        os.unlink(path)


@contextmanager
def crashing_at(monkeypatch: pytest.MonkeyPatch, step: int) -> Iterator[CrashingOs]:
    crashing = CrashingOs(step)
    with monkeypatch.context() as patch:
        patch.setattr(filestorage, "os", crashing)
        yield crashing


PRELUDE: list[Save] = [
    (HardState(1, 1, 0), [Entry(1, i, b"e%d" % i) for i in range(1, 9)], None),
    (HardState(1, 1, 3), [], None),
    (None, [], Snapshot(3, 1, b"first")),
    (None, [Entry(1, 9, b"e9")], None),
]

CRASHING_SAVES: dict[str, Save] = {
    "append": (None, [Entry(1, 10, b"e10")], None),
    "truncate": (HardState(1, 1, 4), [Entry(2, 6, b"new6")], None),
    "vote": (HardState(2, 3, 3), [], None),
    "vote-and-append": (HardState(2, 0, 3), [Entry(2, 10, b"e10")], None),
    "snapshot-matching": (None, [Entry(1, 10, b"e10")], Snapshot(7, 1, b"second")),
    "snapshot-foreign": (HardState(3, 2, 12), [Entry(3, 13, b"x")], Snapshot(12, 3, b"other")),
}


@pytest.mark.parametrize("name", sorted(CRASHING_SAVES))
def test_crash_at_any_step_of_a_save_loads_consistently(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    memory = MemoryStorage()
    for call in PRELUDE:
        memory.save(*call)
    before = memory.load()
    memory.save(*CRASHING_SAVES[name])
    after = memory.load()
    allowed = [before, mid_state(before, after), after]
    seen = []
    for step in range(100):
        folder = tmp_path / f"step-{step}"
        storage = FileStorage(folder, fsync=False)
        for call in PRELUDE:
            storage.save(*call)
        with crashing_at(monkeypatch, step) as crashing:
            try:
                storage.save(*CRASHING_SAVES[name])
            except Crash:
                pass
        storage.close()
        recovered = FileStorage.open(folder, fsync=False)
        state = recovered.load()
        assert state in allowed, step
        seen.append(2 if state == after else allowed.index(state))
        assert recovered.size_bytes() == expected_size(state)
        assert not list(folder.glob("*.tmp")) and len(list(folder.glob("log-*"))) == 1
        # It takes new saves (at the snapshot, which always attaches).
        recovered.save(None, [Entry(9, state.snapshot.index + 1, b"more")], None)
        saved = recovered.load()
        reopened = reopen(recovered)
        assert reopened.load() == saved
        reopened.close()
        if not crashing.crashed:
            break
    assert seen[0] == 0 and seen[-1] == 2 and seen == sorted(seen), seen


def test_renames_reordered_by_the_file_system_load_generation_before(tmp_path: Path) -> None:
    """Before the folder fsync, either rename of a generation switch may be lost."""
    storage = FileStorage(tmp_path / "live", fsync=False)
    for call in PRELUDE:
        storage.save(*call)
    before = storage.load()
    shutil.copytree(tmp_path / "live", tmp_path / "before")
    storage.save(None, [], Snapshot(8, 1, b"second"))
    storage.close()
    for kept in ("log-00000002", "snapshot-00000002"):
        folder = tmp_path / f"only-{kept}"
        shutil.copytree(tmp_path / "before", folder)
        shutil.copy(tmp_path / "live" / kept, folder / kept)
        assert FileStorage.open(folder, fsync=False).load() == before
        assert not (folder / kept).exists()


def test_leftover_temp_files_are_ignored_and_removed(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path, fsync=False)
    for call in PRELUDE:
        storage.save(*call)
    state = storage.load()
    storage.close()
    for name in ("hardstate.tmp", "log-00000002.tmp", "snapshot-00000002.tmp"):
        (tmp_path / name).write_bytes(b"half a file")
    assert FileStorage.open(tmp_path, fsync=False).load() == state
    assert not list(tmp_path.glob("*.tmp"))


# --- damage and bad folders ------------------------------------------------------------


def log_with_record_offsets(directory: Path) -> tuple[Path, list[int]]:
    """A log of five one-entry saves and the offset where each record starts."""
    storage = FileStorage(directory, fsync=False)
    offsets = []
    for index in range(1, 6):
        offsets.append(log_file(directory).stat().st_size)
        storage.save(None, [Entry(1, index, b"payload %d" % index)], None)
    storage.close()
    return log_file(directory), offsets


@pytest.mark.parametrize("where", ["payload", "length", "checksum"])
def test_damage_in_the_middle_of_the_log_is_an_error(tmp_path: Path, where: str) -> None:
    path, offsets = log_with_record_offsets(tmp_path)
    data = bytearray(path.read_bytes())
    data[offsets[2] + {"length": 1, "checksum": 5, "payload": 12}[where]] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptStorageError, match=f"{path}: record at byte {offsets[2]} "):
        FileStorage.open(tmp_path, fsync=False)
    assert path.stat().st_size == len(data), "nothing may be cut off"


def test_damage_in_the_last_record_is_a_torn_write(tmp_path: Path) -> None:
    path, offsets = log_with_record_offsets(tmp_path)
    data = bytearray(path.read_bytes())
    data[offsets[-1] + 12] ^= 0x40
    path.write_bytes(bytes(data))
    assert [e.index for e in FileStorage.open(tmp_path, fsync=False).load().entries] == [
        1, 2, 3, 4]


@pytest.mark.parametrize("name", ["hardstate", "snapshot-00000001"])
def test_damaged_hard_state_or_snapshot_is_an_error(tmp_path: Path, name: str) -> None:
    storage = FileStorage(tmp_path, fsync=False)
    storage.save(HardState(4, 2, 0), [Entry(4, 2, b"a")], Snapshot(1, 4, b"snap"))
    storage.close()
    path = tmp_path / name
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptStorageError, match=str(path)):
        FileStorage.open(tmp_path, fsync=False)


@pytest.mark.parametrize("name", ["log-00000000", "hardstate"])
def test_newer_format_version_says_to_upgrade(tmp_path: Path, name: str) -> None:
    FileStorage(tmp_path, fsync=False).save(HardState(1, 1, 0), [], None)
    path = tmp_path / name
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, 8, filestorage.FORMAT_VERSION + 1)
    path.write_bytes(bytes(data))
    with pytest.raises(StorageError, match="newer mydns_lab.*upgrade mydns_lab"):
        FileStorage.open(tmp_path, fsync=False)


def test_foreign_file_is_named(tmp_path: Path) -> None:
    FileStorage(tmp_path, fsync=False).close()
    (tmp_path / "hardstate").write_bytes(b"#!/bin/sh\necho hello\n")
    with pytest.raises(StorageError, match="hardstate is not a mydns_lab"):
        FileStorage.open(tmp_path, fsync=False)


def test_folder_that_is_a_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.write_text("not a folder")
    with pytest.raises(StorageError, match=f"data folder {path} is not usable"):
        FileStorage(path, fsync=False)


class DeniedOs:
    """Stands in for ``os`` inside filestorage: creating files is refused."""

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def open(self, path: Path, flags: int, mode: int = 0o777) -> int:
        if flags & os.O_CREAT:
            raise PermissionError(13, "Permission denied", str(path))
        return os.open(path, flags, mode)


def test_folder_refusing_new_files_is_an_error(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(filestorage, "os", DeniedOs())
    with pytest.raises(StorageError, match=f"data folder {tmp_path} is not usable "
                                           r"\(Permission denied\); make it a writable"):
        FileStorage(tmp_path, fsync=False)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_an_error(tmp_path: Path) -> None:
    tmp_path.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(StorageError, match="not usable.*writable"):
            FileStorage(tmp_path, fsync=False)
    finally:
        tmp_path.chmod(stat.S_IRWXU)


# --- life cycle ------------------------------------------------------------------------


def test_is_empty_until_something_is_saved(tmp_path: Path) -> None:
    folder = tmp_path / "node1"
    storage = FileStorage(folder, fsync=False)
    assert storage.is_empty() and reopen(storage).is_empty()
    storage = FileStorage.open(folder, fsync=False)
    storage.save(HardState(1, 0, 0), [], None)
    assert not storage.is_empty() and not reopen(storage).is_empty()
    shutil.rmtree(folder)
    assert FileStorage.open(folder, fsync=False).is_empty()


def test_failed_save_makes_the_storage_unusable(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    storage = FileStorage(tmp_path, fsync=False)
    with crashing_at(monkeypatch, 0), pytest.raises(Crash):
        storage.save(None, [Entry(1, 1, b"a")], None)
    with pytest.raises(StorageError, match="unusable.*reopen"):
        storage.save(None, [Entry(1, 1, b"a")], None)
    with pytest.raises(StorageError):
        storage.load()


def test_entries_that_do_not_attach_are_refused_before_writing(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path, fsync=False)
    size = log_file(tmp_path).stat().st_size
    with pytest.raises(AssertionError):
        storage.save(None, [Entry(1, 5, b"gap")], None)
    assert log_file(tmp_path).stat().st_size == size
    assert FileStorage.open(tmp_path, fsync=False).load() == PersistedState()


# --- telling a lost folder without replaying it ------------------------------------------------


def files_of(folder: Path) -> dict[str, bytes] | None:
    """Every file in ``folder`` and its bytes (None: no folder)."""
    if not folder.exists():
        return None
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def saved(folder: Path, *calls: Save) -> Path:
    storage = FileStorage(folder, fsync=False)
    for call in calls:
        storage.save(*call)
    storage.close()
    return folder


def cut_log(folder: Path, keep: int) -> None:
    """Keep the log's first ``keep`` bytes past those a new folder's log has."""
    fresh = len(files_of(saved(folder.with_name(folder.name + "-fresh")))["log-00000000"])
    path = log_file(folder)
    path.write_bytes(path.read_bytes()[:fresh + keep])


def remove(folder: Path, pattern: str) -> None:
    for path in folder.glob(pattern):
        path.unlink()


WITH_DATA = (HardState(2, 1, 0), [Entry(2, i, b"e%d" % i) for i in range(1, 40)], None)

# How launches find server folders, by what the launcher must decide.
FOLDERS: dict[str, Callable[[Path], object]] = {
    # Decided from names and the hard state alone (no replay, no change):
    "no folder": lambda f: None,
    "wiped: an empty folder": lambda f: f.mkdir(),
    "wiped, marked recovering": lambda f: (f.mkdir(), (f / "RECOVERING").touch()),
    "wiped, temp files left": lambda f: (f.mkdir(), (f / "hardstate.tmp").write_bytes(b"half"),
                                         (f / "log-00000001.tmp").write_bytes(b"half")),
    "opened, never saved": lambda f: saved(f),
    "existing data": lambda f: saved(f, WITH_DATA),
    "existing data and a snapshot": lambda f: saved(f, WITH_DATA, (None, [], Snapshot(9, 2, b"s"))),
    "a term but no entries yet": lambda f: saved(f, (HardState(1, 0, 0), [], None)),
    "hard state left, logs deleted": lambda f: remove(saved(f, WITH_DATA), "log-*"),
    "torn first save after a term": lambda f: cut_log(
        saved(f, (HardState(1, 0, 0), [], None), (None, [Entry(1, 1, b"first")], None)), 5),
    # Left to FileStorage (it reads these as before):
    "log left, hard state deleted": lambda f: remove(saved(f, WITH_DATA), "hardstate"),
    "entries saved without a hard state": lambda f: saved(f, (None, [Entry(1, 1, b"a")], None)),
    "torn first save, no hard state": lambda f: cut_log(
        saved(f, (None, [Entry(1, 1, b"first")], None)), 5),
    "snapshot without a hard state": lambda f: saved(f, (None, [], Snapshot(3, 1, b"s"))),
    "an empty snapshot, nothing else": lambda f: saved(f, (None, [], Snapshot())),
    "term and vote back at 0": lambda f: saved(f, (HardState(1, 1, 0), [], None),
                                               (HardState(0, 0, 0), [], None)),
}
WITHOUT_OPENING = list(FOLDERS)[:10]


def opened_holds_state(folder: Path) -> bool:
    """What the launcher decided before: open the folder, replay, look."""
    if not folder.exists():
        return False
    with FileStorage(folder, fsync=False) as storage:
        return not storage.is_empty()


@pytest.mark.parametrize("case", FOLDERS)
def test_holds_saved_state_decides_as_opening_the_folder(tmp_path: Path, case: str) -> None:
    folder = tmp_path / "server-1"
    FOLDERS[case](folder)
    copy = tmp_path / "copy"
    if folder.exists():
        shutil.copytree(folder, copy)
    assert filestorage.holds_saved_state(folder) == opened_holds_state(copy), case


@pytest.mark.parametrize("case", WITHOUT_OPENING)
def test_holds_saved_state_reads_no_log_and_changes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    """The usual folders are told apart cheaply: FileStorage (which replays
    the whole log) is never opened, and not one file is made or changed."""
    folder = tmp_path / "server-1"
    FOLDERS[case](folder)
    before = files_of(folder)

    def no_opening(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"{case}: opened FileStorage, replaying the log")
    monkeypatch.setattr(FileStorage, "__init__", no_opening)
    filestorage.holds_saved_state(folder)
    assert files_of(folder) == before, case


def test_holds_saved_state_agrees_after_random_saves_and_torn_tails(tmp_path: Path) -> None:
    """Random saves, then perhaps a torn tail and a lost hard state: the
    answer is always what opening the folder finds."""
    def check(seed: int) -> None:
        rng = random.Random(seed)
        folder = tmp_path / f"seed-{seed}"
        memory = MemoryStorage()
        storage = FileStorage(folder, fsync=False)
        for _ in range(rng.randint(0, 4)):
            call = random_save(rng, memory.load())
            storage.save(*call)
            memory.save(*call)
        storage.close()
        if rng.random() < 0.5:
            cut_log(folder, rng.randint(0, 60))
        if rng.random() < 0.5:
            remove(folder, "hardstate")
        copy = tmp_path / f"seed-{seed}-copy"
        shutil.copytree(folder, copy)
        assert filestorage.holds_saved_state(folder) == opened_holds_state(copy)

    for_each_seed("holds_saved_state_agrees", 60, check)


def test_holds_saved_state_refuses_what_opening_refuses(tmp_path: Path) -> None:
    orphan = saved(tmp_path / "orphan", WITH_DATA, (None, [], Snapshot(9, 2, b"s")))
    remove(orphan, "log-*")
    with pytest.raises(CorruptStorageError, match="no complete pair"):
        filestorage.holds_saved_state(orphan)
    damaged = saved(tmp_path / "damaged", WITH_DATA)
    (damaged / "hardstate").write_bytes(b"#!/bin/sh\necho hello\n")
    with pytest.raises(StorageError, match="hardstate is not a mydns_lab"):
        filestorage.holds_saved_state(damaged)
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    with pytest.raises(StorageError, match="is not usable"):
        filestorage.holds_saved_state(a_file)
