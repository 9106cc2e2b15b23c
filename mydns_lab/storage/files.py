"""Durable storage for a real Raft server: one folder of files per server.

Who calls what: the host builds a :class:`FileStorage` on the server's data
folder at start-up (this reads the folder and repairs a torn tail), builds
its node from :meth:`FileStorage.load`, then calls :meth:`FileStorage.save`
once per Ready batch before sending that batch's messages, and ``close`` at
shut-down. One process owns a folder at a time. Before any server starts,
the launcher asks :func:`holds_saved_state` of each folder, which mostly
decides without opening it.

Files in the folder (``G`` is the generation, bumped by every snapshot)::

    hardstate      term and vote, replaced atomically when either changes
    snapshot-G     the snapshot that log-G continues (no file for G = 0)
    log-G          append-only: a start record naming G and its snapshot,
                   then one batch record per save() that touched the log
    *.tmp          a replacement being written; removed at start-up

The folder is made 0700 and every file 0600 (:data:`FOLDER_MODE`,
:data:`FILE_MODE`): the log holds every record and owner hash.

Every file starts with an 8-byte magic naming its kind and a 4-byte format
version. Records follow: a 4-byte length, the CRC32 of the payload, then
the payload, encoded with :func:`mydns_lab.codec.encode`. A batch record
holds the save's entries and the commit index after the save; replaying it
with :func:`mydns_lab.storage.apply_save` truncates the log at the first
entry's index and appends, so no separate truncation marker is needed and
both storages follow the same rules. The commit index lives only in the log
and is written lazily (it is not needed for safety): a save that only moves
it writes nothing, and after a crash load() may return an older commit
index than the last one saved.

Crash consistency. A save writes its whole log change as one record and
fsyncs once, so a crash inside it leaves the record whole or torn; a torn
record can only be the last one, and start-up drops it. A snapshot starts a
new generation: snapshot-G+1 and log-G+1 (holding the whole state after the
save) are each written to a temp file, fsynced and renamed, then the folder
is fsynced and only then are the generation-G files removed. Start-up uses
the newest generation whose two files both exist, so a crash anywhere in the
switch loads generation G (before the save) or G+1 (after it). The one
intermediate state: a save that changes term or vote writes ``hardstate``
first, so a crash after that write loads the new term and vote with the old
log and commit index -- the state of a node that persisted a higher term and
crashed before appending, which Raft allows.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from pathlib import Path
from typing import Any, Sequence

from ..codec import DecodeError, decode, encode
from ..core.messages import Entry, HardState, Snapshot
from .base import ENTRY_OVERHEAD_BYTES, PersistedState, apply_save
from .filetypes import FileLogBatch, FileLogStart

_FILE_RECORDS = (FileLogStart, FileLogBatch)

FORMAT_VERSION = 1
"""Bumped when files change in a way this code could misread."""

_HEADER = struct.Struct("<8sI")   # magic, format version
_FRAME = struct.Struct("<II")     # payload length, CRC32 of the payload

_LOG_MAGIC = b"MYDNSLOG"
_HARD_STATE_MAGIC = b"MYDNSHST"
_SNAPSHOT_MAGIC = b"MYDNSSNP"

_HARD_STATE_NAME = "hardstate"
_TMP_SUFFIX = ".tmp"
_GENERATION_NAME = re.compile(r"^(log|snapshot)-(\d{8})$")


class StorageError(Exception):
    """The data folder cannot be used; the message says why and what to do."""


class CorruptStorageError(StorageError):
    """A file holds damaged data that is not a torn tail of the last save."""


# --- encoding -------------------------------------------------------------------


def _frame(record: Any) -> bytes:
    """A record as stored: length, CRC32, payload."""
    payload = encode(record)
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def _frame_end(data: bytes, offset: int) -> int | None:
    """End of the intact record starting at ``offset``, or None.

    Intact means the frame fits in ``data``, the payload is not empty (a
    zero-filled tail would otherwise pass: the CRC32 of nothing is 0) and
    the checksum matches.
    """
    if offset + _FRAME.size > len(data):
        return None
    length, crc = _FRAME.unpack_from(data, offset)
    start = offset + _FRAME.size
    end = start + length
    if length == 0 or end > len(data) or zlib.crc32(data[start:end]) != crc:
        return None
    return end


def _intact_frame_after(data: bytes, offset: int) -> int | None:
    """The first offset after ``offset`` where an intact record starts.

    Used only once a damaged record is found, to tell a torn tail (nothing
    intact follows) from damage in the middle (acknowledged records follow).
    """
    for candidate in range(offset + 1, len(data) - _FRAME.size + 1):
        if _frame_end(data, candidate) is not None:
            return candidate
    return None


def _check_header(path: Path, data: bytes, magic: bytes) -> int:
    """Validate a file's header; return the offset of its first record."""
    if len(data) < _HEADER.size:
        raise CorruptStorageError(
            f"{path} is cut short ({len(data)} bytes, no complete header); "
            "restore the folder from a backup or wipe it so the node rejoins the cluster")
    found, version = _HEADER.unpack_from(data, 0)
    if found != magic:
        raise StorageError(
            f"{path} is not a mydns_lab {magic.decode()} file (magic {found!r}); "
            "move it out of the data folder or choose another folder")
    if version > FORMAT_VERSION:
        raise StorageError(
            f"{path} was written by a newer mydns_lab (format version {version}, this "
            f"one reads up to {FORMAT_VERSION}); upgrade mydns_lab or use another data folder")
    if version < 1:
        raise CorruptStorageError(f"{path} has an invalid format version {version}; "
                                  "restore the folder from a backup")
    return _HEADER.size


def _decode_record(path: Path, data: bytes, offset: int, end: int, kind: type) -> Any:
    """Decode the intact record at ``offset`` and check it is a ``kind``."""
    try:
        record = decode(data[offset + _FRAME.size:end], also=_FILE_RECORDS)
    except DecodeError as exc:
        raise CorruptStorageError(
            f"{path}: record at byte {offset} has a good checksum but does not decode "
            f"({exc}); it was written by another program or version -- "
            "restore the folder from a backup") from exc
    if not isinstance(record, kind):
        raise CorruptStorageError(
            f"{path}: record at byte {offset} is a {type(record).__name__}, "
            f"expected {kind.__name__}; restore the folder from a backup")
    return record


def _read_single_record(path: Path, magic: bytes, kind: type) -> Any:
    """Read a file made of a header and exactly one record (hard state, snapshot).

    These files are renamed into place only once complete and fsynced, so
    any damage is real damage, never a torn write.
    """
    data = path.read_bytes()
    offset = _check_header(path, data, magic)
    end = _frame_end(data, offset)
    if end is None or end != len(data):
        raise CorruptStorageError(
            f"{path} is damaged (bad length or checksum at byte {offset}); "
            "restore the folder from a backup or wipe it so the node rejoins the cluster")
    return _decode_record(path, data, offset, end, kind)


def _io_error(action: str, path: Path, exc: OSError) -> StorageError:
    """The error a failed system call becomes: what failed and what to do."""
    return StorageError(
        f"cannot {action} {path}: {exc.strerror or exc}; this node must stop -- "
        "check free space and permissions of the data folder, then restart it")


def _log_path(directory: Path, generation: int) -> Path:
    return directory / f"log-{generation:08d}"


def _snapshot_path(directory: Path, generation: int) -> Path:
    return directory / f"snapshot-{generation:08d}"


def _generations(directory: Path) -> tuple[set[int], set[int]]:
    """Generations that have a log file, and those that have a snapshot."""
    logs: set[int] = set()
    snapshots: set[int] = set()
    for path in directory.iterdir():
        match = _GENERATION_NAME.match(path.name)
        if match:
            (logs if match[1] == "log" else snapshots).add(int(match[2]))
    return logs, snapshots


def _current_generation(directory: Path) -> int | None:
    """The newest generation with both its files, or None for a new folder."""
    logs, snapshots = _generations(directory)
    complete = {g for g in logs if g == 0 or g in snapshots}
    if complete:
        return max(complete)
    if logs or snapshots:
        raise CorruptStorageError(
            f"{directory} holds log or snapshot files but no complete pair "
            f"(logs {sorted(logs)}, snapshots {sorted(snapshots)}); restore the folder "
            "from a backup or wipe it so the node rejoins the cluster")
    return None


def _stored_hard_state(directory: Path) -> HardState:
    """Term and vote from ``directory``'s hardstate file (zeros without one);
    its commit is 0, as written: the commit index lives in the log."""
    path = directory / _HARD_STATE_NAME
    if not path.exists():
        return HardState()
    return _read_single_record(path, _HARD_STATE_MAGIC, HardState)


def _generation_log(generation: int, snapshot: Snapshot, entries: Sequence[Entry],
                    commit: int) -> bytes:
    """The whole content of log-``generation`` as a generation starts it."""
    return b"".join((
        _HEADER.pack(_LOG_MAGIC, FORMAT_VERSION),
        _frame(FileLogStart(generation, snapshot.index, snapshot.term)),
        _frame(FileLogBatch(tuple(entries), commit)),
    ))


def _entries_size(entries: Sequence[Entry]) -> int:
    """Bytes counted for ``entries``, the same way MemoryStorage counts them."""
    return sum(len(e.data) + ENTRY_OVERHEAD_BYTES for e in entries)


# --- the storage ----------------------------------------------------------------


FILE_MODE = 0o600
"""Every file storage creates: its owner's alone."""
FOLDER_MODE = 0o700
"""A server folder storage creates (an existing one keeps its mode)."""

RECOVERING_MARKER = "RECOVERING"
"""A file in a server's folder: the folder was found empty while the
cluster already existed, so the node must catch up before it votes. Removed,
durably, once it has (:meth:`FileStorage.end_recovery`)."""


class FileStorage:
    """:class:`mydns_lab.storage.base.Storage` backed by files in ``directory``.

    Constructing one opens the folder (creating it if missing) and reads
    back exactly what earlier saves made durable. An in-memory mirror of the
    state, kept with :func:`apply_save` like MemoryStorage, makes ``load``
    cheap, except for the snapshot's bytes: the mirror names the snapshot
    by index and term, and ``load`` and :meth:`snapshot_data` read its file
    (a server holding many names would otherwise keep them twice more).
    After a save raises, every later call raises: the caller must
    stop and reopen the folder, which recovers from whatever reached disk.
    ``fsync=False`` skips every fsync, for tests only.
    """

    def __init__(self, directory: Path, fsync: bool = True) -> None:
        self.directory = Path(directory)
        self._fsync = fsync
        self._state = PersistedState()
        self._bytes = 0
        self._snapshot_bytes = 0
        self._generation = 0
        self._log_fd: int | None = None
        self._log_file = _log_path(self.directory, 0)
        self._failure: str | None = None
        self._open_folder()
        self._recovering = (self.directory / RECOVERING_MARKER).exists()

    @classmethod
    def open(cls, directory: Path, fsync: bool = True) -> FileStorage:
        """Open ``directory`` and rebuild the state from disk alone."""
        return cls(directory, fsync)

    # --- the Storage protocol ---------------------------------------------------

    def load(self) -> PersistedState:
        """The state as of the last save that returned (a copy; the
        snapshot read from its file)."""
        self._check_usable()
        return PersistedState(self._state.hard_state, self._stored_snapshot(),
                              list(self._state.entries))

    def save(self, hard_state: HardState | None, entries: Sequence[Entry],
             snapshot: Snapshot | None) -> None:
        """Make a Ready batch durable (rules: :meth:`Storage.save`).

        Costs at most one log fsync; a rename and folder fsync only when term
        or vote change; a new generation only with a snapshot.
        """
        self._check_usable()
        try:
            self._save(hard_state, entries, snapshot)
        except BaseException as exc:
            # The mirror may be ahead of the disk now; only a reopen can tell.
            self._failure = f"{type(exc).__name__}: {exc}"
            raise

    def size_bytes(self) -> int:
        """Entry data plus overhead, counted as MemoryStorage counts it."""
        return self._bytes + ENTRY_OVERHEAD_BYTES

    def snapshot_data(self, index: int) -> bytes | None:
        """The stored snapshot's bytes, read from its file, when it is the
        one at ``index``; None when another replaced it."""
        self._check_usable()
        if index != self._state.snapshot.index or index == 0:
            return None
        return self._stored_snapshot().data

    def snapshot_size_bytes(self) -> int:
        """Bytes of the stored snapshot's data (0: none yet)."""
        return self._snapshot_bytes

    @property
    def recovering(self) -> bool:
        """The folder held the :data:`RECOVERING_MARKER` file when opened,
        and :meth:`end_recovery` has not run since."""
        return self._recovering

    def end_recovery(self) -> None:
        self._check_usable()
        try:
            (self.directory / RECOVERING_MARKER).unlink(missing_ok=True)
            self._sync_folder()
        except OSError as exc:
            raise _io_error("remove", self.directory / RECOVERING_MARKER, exc) from exc
        self._recovering = False

    # --- the rest of the API ----------------------------------------------------

    def is_empty(self) -> bool:
        """True when nothing was ever saved here: no term, vote, log or snapshot.

        A server that finds its folder empty while the cluster already exists
        lost its data; the host decides what to do about it.
        """
        return self._state == PersistedState()

    def close(self) -> None:
        """Release the log file; the storage cannot be used afterwards."""
        if self._log_fd is not None:
            os.close(self._log_fd)
            self._log_fd = None
        self._failure = self._failure or "closed"

    def __enter__(self) -> FileStorage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- saving -----------------------------------------------------------------

    def _save(self, hard_state: HardState | None, entries: Sequence[Entry],
              snapshot: Snapshot | None) -> None:
        old = self._state.hard_state
        replaced = self._replaced_size(entries) if snapshot is None else 0
        # The mirror goes first: apply_save checks that the entries attach
        # before anything reaches the disk.
        apply_save(self._state, hard_state, entries, snapshot)
        new = self._state.hard_state
        if (new.term, new.vote) != (old.term, old.vote):
            # Before the log: a crash in between then leaves a higher term
            # with an older log, a state Raft reaches anyway.
            self._write_hard_state(new)
        if snapshot is not None:
            self._start_generation(self._generation + 1)
            self._bytes = _entries_size(self._state.entries)
            self._keep_snapshot_name_only()
        elif entries:
            self._append(FileLogBatch(tuple(entries), new.commit))
            self._bytes += _entries_size(entries) - replaced
        # A save that only moves the commit index writes nothing: the index
        # rides along with the next entries, and a restart that finds an
        # older one relearns it from the leader. Writing it would cost an
        # fsync per commit, and an unsynced record could tear mid-log.

    def _replaced_size(self, entries: Sequence[Entry]) -> int:
        """Bytes of the stored entries that ``entries`` will overwrite."""
        if not entries:
            return 0
        cut = max(0, entries[0].index - self._state.snapshot.index - 1)
        return _entries_size(self._state.entries[cut:])

    def _append(self, record: FileLogBatch) -> None:
        """Append one record to the current log and fsync it (the hot path)."""
        assert self._log_fd is not None
        self._write_all(self._log_fd, _frame(record), self._log_file)
        self._sync(self._log_fd, self._log_file)

    def _write_hard_state(self, hard_state: HardState) -> None:
        # The commit index is kept in the log; 0 here so nobody trusts it.
        record = HardState(hard_state.term, hard_state.vote, 0)
        self._replace_file(self.directory / _HARD_STATE_NAME,
                           _HEADER.pack(_HARD_STATE_MAGIC, FORMAT_VERSION) + _frame(record),
                           sync_folder=True)

    def _start_generation(self, generation: int) -> None:
        """Write the mirror as generation ``generation`` and switch to it.

        Called at a snapshot (compaction) and to create generation 0. Old
        files go only once the new ones are durable in the folder.
        """
        snapshot = self._state.snapshot
        if generation > 0:
            self._replace_file(_snapshot_path(self.directory, generation),
                               _HEADER.pack(_SNAPSHOT_MAGIC, FORMAT_VERSION) + _frame(snapshot),
                               sync_folder=False)
        log = _generation_log(generation, snapshot, self._state.entries,
                              self._state.hard_state.commit)
        # One folder fsync covers both renames; start-up ignores a
        # generation that lacks either file.
        self._replace_file(_log_path(self.directory, generation), log, sync_folder=True)
        self._open_log(generation)
        self._remove_generations(keep=generation)

    def _replace_file(self, path: Path, data: bytes, sync_folder: bool) -> None:
        """Atomically give ``path`` the content ``data``: temp file, fsync, rename."""
        tmp = path.with_name(path.name + _TMP_SUFFIX)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        except OSError as exc:
            raise _io_error("create", tmp, exc) from exc
        try:
            self._write_all(fd, data, tmp)
            self._sync(fd, tmp)
        finally:
            os.close(fd)
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise _io_error("rename", tmp, exc) from exc
        if sync_folder:
            self._sync_folder()

    def _write_all(self, fd: int, data: bytes, path: Path) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view):]
        except OSError as exc:
            raise _io_error("write", path, exc) from exc

    def _sync(self, fd: int, path: Path) -> None:
        if not self._fsync:
            return
        try:
            os.fsync(fd)
        except OSError as exc:
            raise _io_error("fsync", path, exc) from exc

    def _sync_folder(self) -> None:
        """Make renames and new files in the folder durable."""
        if not self._fsync:
            return
        try:
            fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise _io_error("fsync", self.directory, exc) from exc

    def _check_usable(self) -> None:
        if self._failure is not None:
            raise StorageError(
                f"storage in {self.directory} is unusable ({self._failure}); "
                "stop this node and reopen the folder to recover what is durable")

    # --- files and generations --------------------------------------------------

    def _remove_generations(self, keep: int) -> None:
        """Delete every generation's files but ``keep``'s.

        No folder fsync: a deleted file that comes back after a crash is an
        older generation, which start-up ignores and deletes again.
        """
        logs, snapshots = _generations(self.directory)
        stale = [_log_path(self.directory, g) for g in logs - {keep}]
        stale += [_snapshot_path(self.directory, g) for g in snapshots - {keep}]
        for path in stale:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise _io_error("remove", path, exc) from exc

    def _keep_snapshot_name_only(self) -> None:
        """Drop the mirror's snapshot bytes, now in the snapshot file."""
        snapshot = self._state.snapshot
        self._snapshot_bytes = len(snapshot.data)
        self._state.snapshot = snapshot.without_data()

    def _stored_snapshot(self) -> Snapshot:
        """The current generation's snapshot, read back from its file."""
        named = self._state.snapshot
        if self._generation == 0:
            return Snapshot()
        path = _snapshot_path(self.directory, self._generation)
        try:
            stored = _read_single_record(path, _SNAPSHOT_MAGIC, Snapshot)
        except OSError as exc:
            raise _io_error("read", path, exc) from exc
        if (stored.index, stored.term) != (named.index, named.term):
            raise CorruptStorageError(
                f"{path} holds snapshot ({stored.index}, {stored.term}) where "
                f"({named.index}, {named.term}) was written; restore the folder from a backup")
        return stored

    def _open_log(self, generation: int) -> None:
        """Make log-``generation`` the file that saves append to."""
        path = _log_path(self.directory, generation)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        except OSError as exc:
            raise _io_error("open", path, exc) from exc
        if self._log_fd is not None:
            os.close(self._log_fd)
        self._log_fd = fd
        self._log_file = path
        self._generation = generation

    # --- opening ------------------------------------------------------------------

    def _open_folder(self) -> None:
        """Read the folder into the mirror, repairing a torn tail on the way."""
        self._prepare_folder()
        generation = _current_generation(self.directory)
        if generation is None:
            self._start_generation(0)
        else:
            self._state = self._read_generation(generation)
            self._keep_snapshot_name_only()
            self._open_log(generation)
            self._remove_generations(keep=generation)
        self._state.hard_state = self._read_hard_state(self._state.hard_state.commit)
        self._bytes = _entries_size(self._state.entries)

    def _prepare_folder(self) -> None:
        """Create the folder if missing, prove it writable, drop temp files."""
        probe = self.directory / f".probe{_TMP_SUFFIX}"
        try:
            self.directory.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE))
            for path in self.directory.iterdir():
                if path.name.endswith(_TMP_SUFFIX):
                    path.unlink()
        except OSError as exc:
            raise StorageError(
                f"data folder {self.directory} is not usable ({exc.strerror or exc}); "
                "make it a writable directory or choose another folder") from exc

    def _read_hard_state(self, commit: int) -> HardState:
        """Term and vote from the hardstate file, with the log's ``commit``."""
        stored = _stored_hard_state(self.directory)
        return HardState(stored.term, stored.vote, commit)

    def _read_generation(self, generation: int) -> PersistedState:
        """Snapshot and log of ``generation`` replayed; hard state not included."""
        snapshot = Snapshot()
        if generation > 0:
            snapshot = _read_single_record(_snapshot_path(self.directory, generation),
                                           _SNAPSHOT_MAGIC, Snapshot)
        path = _log_path(self.directory, generation)
        data = path.read_bytes()
        offset = _check_header(path, data, _LOG_MAGIC)
        end = _frame_end(data, offset)
        if end is None:
            raise CorruptStorageError(
                f"{path}: start record at byte {offset} is damaged; restore the folder "
                "from a backup or wipe it so the node rejoins the cluster")
        start = _decode_record(path, data, offset, end, FileLogStart)
        if (start.generation, start.snapshot_index, start.snapshot_term) != (
                generation, snapshot.index, snapshot.term):
            raise CorruptStorageError(
                f"{path} continues generation {start.generation} at snapshot "
                f"({start.snapshot_index}, {start.snapshot_term}) but sits beside snapshot "
                f"({snapshot.index}, {snapshot.term}) of generation {generation}; "
                "restore the folder from a backup")
        state = PersistedState(snapshot=snapshot)
        good_end = self._replay(path, data, end, state)
        if good_end < len(data):
            self._drop_torn_tail(path, data, good_end)
        return state

    def _replay(self, path: Path, data: bytes, offset: int, state: PersistedState) -> int:
        """Apply every intact batch record from ``offset``; return where they end."""
        while (end := _frame_end(data, offset)) is not None:
            batch = _decode_record(path, data, offset, end, FileLogBatch)
            if batch.entries:
                first = batch.entries[0].index
                base = state.snapshot.index + 1
                if not base <= first <= base + len(state.entries):
                    raise CorruptStorageError(
                        f"{path}: record at byte {offset} writes from index {first} but the "
                        f"log holds {base}..{base + len(state.entries) - 1}; "
                        "restore the folder from a backup")
            apply_save(state, HardState(commit=batch.commit), batch.entries, None)
            offset = end
        return offset

    def _drop_torn_tail(self, path: Path, data: bytes, good_end: int) -> None:
        """Cut the log at ``good_end`` if what follows is the last save, torn."""
        intact = _intact_frame_after(data, good_end)
        if intact is not None:
            raise CorruptStorageError(
                f"{path}: record at byte {good_end} is damaged but intact records follow "
                f"(from byte {intact}), so dropping it would lose acknowledged data; "
                "restore the folder from a backup or wipe it so the node rejoins the cluster")
        try:
            os.truncate(path, good_end)
            fd = os.open(path, os.O_WRONLY)
            try:
                self._sync(fd, path)
            finally:
                os.close(fd)
        except OSError as exc:
            raise _io_error("truncate", path, exc) from exc


def mark_recovering(directory: Path) -> None:
    """Make ``directory`` a lost server's replacement: a FileStorage opened
    on it is ``recovering`` until the node catches up. The launcher calls
    it for an empty folder of a cluster that already exists."""
    directory.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
    (directory / RECOVERING_MARKER).touch(mode=FILE_MODE)


def holds_saved_state(directory: Path) -> bool:
    """Whether ``directory`` holds anything a save made durable: what
    ``not FileStorage(directory).is_empty()`` answers, mostly without
    replaying the log.

    The launcher asks it of every server folder at start-up, to find the
    folders that were lost, before each server opens (and replays) its own.
    The usual cases are decided from file names and the few bytes of the
    hard state, and change nothing on disk: no folder, or no log, snapshot
    or hard state in it (never used, or wiped): False; a hard state with a
    term or vote (a server writes one once it learns of term 1): True; only
    the log a new folder is given, byte for byte: False. Anything else
    (entries saved without a hard state, the torn tail of a first save) is
    opened with :class:`FileStorage`, which repairs a torn tail as every
    open does.

    Raises what opening raises for the files it reads, and the
    :class:`CorruptStorageError` of log or snapshot files without a complete
    pair. Damage in a log it does not read surfaces when the server opens
    the folder.
    """
    if not directory.exists():
        return False
    if directory.is_dir():  # else opening says why the folder is unusable
        generation = _current_generation(directory)
        stored = _stored_hard_state(directory)
        if (stored.term, stored.vote) != (0, 0):
            return True
        if generation is None:
            return False
        fresh = _generation_log(0, Snapshot(), (), 0)
        log = _log_path(directory, 0)
        if (generation == 0 and log.stat().st_size == len(fresh)
                and log.read_bytes() == fresh):
            return False
    with FileStorage(directory, fsync=False) as storage:
        return not storage.is_empty()
