"""``mydns export --data-dir DIR [--output FILE]``: every record of the
embedded store, as JSON lines, for ``mydns import`` into etcd.

    mydns export --data-dir mydns-data --output records.jsonl

Who calls what: the operator stops the lab, exports, then imports the file
with :mod:`mydns_lab.etcd.importer`; names keep their owners (the hashes
the store keeps, never a token), so nobody claims a name again.

:func:`committed_records` reads the data folder as restarted servers
would, without changing it: it takes the folder's lock
(:class:`~mydns_lab.lab.datalock.DataFolderLock`: a running lab is
refused, and no lab starts while it reads), copies each ``server-*``
folder aside (opening file storage repairs a torn tail; the export must
not write), loads the copy with
:class:`~mydns_lab.storage.files.FileStorage`, restores its snapshot into
a :class:`~mydns_lab.raftkv.KVStateMachine` and applies its log entries
up to its *export index*; the server whose replay reaches furthest wins.

The export index. File storage writes the commit index lazily, with the
next entries, so in a cluster that went quiet no disk says the last
writes are committed: a server's durable commit index lags them, and
stopping there would lose the last acknowledged names. A server's export
index is therefore the larger of its durable commit index and the highest
index of its log that a majority of the cluster's servers hold (the same
term at the same index, or a later index at which they agree: Raft's log
matching), which is how a leader counts commitment. Every acknowledged
write is in it: it was committed, so durable on a majority (a leader
counts only durable copies). Nothing in it contradicts a committed entry:
two majorities share a server, which holds one entry per index. What it
may add beyond the committed log are writes whose client was never told
they succeeded (it saw a time-out or a retry, which may have taken
effect), and only while the embedded store stays retired could such a
write be overwritten later; migration retires it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, TextIO

from .. import codec
from ..cmdline import EXIT_USAGE, UsageParser
from ..core.quorum import committed_index
from ..protocol import Command, Record
from ..raftkv import KVStateMachine
from ..storage.base import PersistedState
from ..storage.files import FILE_MODE, FileStorage, StorageError
from .datalock import DataFolderError, DataFolderLock
from .launcher import CLUSTER_FILE

SERVER_FOLDERS = "server-*"


class ExportError(Exception):
    """The data folder cannot be exported; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Replay:
    """One server folder replayed to its export index ``applied``:
    ``past_commit`` of those entries lie past its durable commit index
    (held by a majority), ``left_out`` entries of its log lie past it."""

    folder: Path
    applied: int
    past_commit: int
    left_out: int
    records: tuple[Record, ...]


def committed_records(data_dir: Path) -> list[Record]:
    """Every record the embedded store in ``data_dir`` holds as committed
    (see the module's doc), sorted by name; raises ExportError (see
    :func:`replay_data_folder`)."""
    return list(replay_data_folder(data_dir).records)


def replay_data_folder(data_dir: Path) -> Replay:
    """The furthest replay of ``data_dir``'s server folders, read under the
    folder's lock (released before returning). Raises ExportError when the
    folder is missing, in use by a lab, holds no server folder, or a server
    folder cannot be read."""
    if not data_dir.is_dir():
        raise ExportError(f"no data folder {data_dir}; pass the --data-dir the lab ran with")
    if not any(data_dir.glob(SERVER_FOLDERS)):  # checked first: taking the lock writes
        raise _no_server_folder(data_dir)
    try:
        lock = DataFolderLock.take(data_dir)
    except DataFolderError as exc:
        raise ExportError(f"cannot export: {exc}") from None
    try:
        folders = sorted(p for p in data_dir.glob(SERVER_FOLDERS) if p.is_dir())
        if not folders:
            raise _no_server_folder(data_dir)
        states = {folder: _load(folder) for folder in folders}
        servers = max(len(folders), _cluster_size(data_dir))
    finally:
        lock.release()
    replays = [_replay(folder, state, _export_index(state, list(states.values()), servers))
               for folder, state in states.items()]
    return max(replays, key=lambda r: r.applied)


def _no_server_folder(data_dir: Path) -> ExportError:
    return ExportError(f"{data_dir} holds no server folder (server-1, ...); pass the "
                       "--data-dir the lab ran with")


def _cluster_size(data_dir: Path) -> int:
    """Servers the lab's ``cluster.json`` records (0 without one)."""
    try:
        return int(json.loads((data_dir / CLUSTER_FILE).read_text())["servers"])
    except FileNotFoundError:
        return 0
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ExportError(f"{data_dir / CLUSTER_FILE} is damaged ({exc}); restore it from a "
                          "backup: the export needs the number of servers") from None


def _load(folder: Path) -> PersistedState:
    """``folder``'s durable state, read from a copy (opening file storage
    repairs a torn tail, and the export writes nothing)."""
    with tempfile.TemporaryDirectory(prefix="mydns-export-") as scratch:
        copy = Path(scratch) / folder.name
        try:
            shutil.copytree(folder, copy)
            with FileStorage.open(copy, fsync=False) as storage:
                return storage.load()
        except (OSError, StorageError) as exc:
            raise ExportError(f"cannot read server folder {folder}: {exc}; no record was "
                              "exported (check its permissions, or export a copy of the "
                              "data folder restored from a backup)") from None


def _last_index(state: PersistedState) -> int:
    return state.entries[-1].index if state.entries else state.snapshot.index


def _term_at(state: PersistedState, index: int) -> int | None:
    """The term of ``state``'s entry at ``index``, None when not known
    (compacted, or past its log)."""
    if index == state.snapshot.index:
        return state.snapshot.term
    offset = index - state.snapshot.index - 1
    return state.entries[offset].term if 0 <= offset < len(state.entries) else None


def _agreement(mine: PersistedState, other: PersistedState) -> int:
    """The highest index up to which ``other`` holds ``mine``'s log, as far
    as the two tell: the last index where both know the same term (log
    matching: the same prefix), else the older snapshot's (both committed)."""
    floor = max(mine.snapshot.index, other.snapshot.index)
    for index in range(min(_last_index(mine), _last_index(other)), floor - 1, -1):
        term = _term_at(mine, index)
        if term is not None and term == _term_at(other, index):
            return index
    return min(mine.snapshot.index, other.snapshot.index)


def _export_index(state: PersistedState, states: list[PersistedState], servers: int) -> int:
    """Where ``state``'s replay stops: its durable commit index, or the
    highest index of its log a majority of ``servers`` holds (folders
    missing count as holding nothing)."""
    held = [_agreement(state, other) for other in states] + [0] * (servers - len(states))
    return min(_last_index(state), max(state.hard_state.commit, state.snapshot.index,
                                       committed_index(held)))


def _replay(folder: Path, state: PersistedState, export_index: int) -> Replay:
    machine = KVStateMachine(codec)
    try:
        machine.restore(state.snapshot)
    except ValueError as exc:
        raise ExportError(f"{folder}: its snapshot does not decode ({exc}); it was written "
                          "by another program or version -- restore it from a backup") from None
    for entry in state.entries:
        if entry.index > export_index:
            break
        if not entry.data:
            machine.skip(entry.index)  # a leader's no-op
            continue
        try:
            command = codec.decode(entry.data)
        except ValueError as exc:
            command = exc
        if not isinstance(command, Command):
            raise ExportError(f"{folder}: log entry {entry.index} is not a record store "
                              f"command ({command}); restore the folder from a backup")
        machine.apply(entry.index, command)
    commit = max(state.hard_state.commit, state.snapshot.index)
    records = tuple(machine.records[name] for name in sorted(machine.records))
    return Replay(folder, machine.applied_index, max(0, machine.applied_index - commit),
                  _last_index(state) - machine.applied_index, records)


def record_json(record: Record) -> dict[str, object]:
    """One exported line's object (what :mod:`mydns_lab.etcd.importer` reads)."""
    return {"name": record.name, "ipv4": list(record.ipv4), "ipv6": list(record.ipv6),
            "txt": list(record.txt), "owner": record.owner, "seq": record.seq,
            "updated_ms": record.updated_ms}


def write_json_lines(records: Iterable[Record], out: TextIO) -> None:
    """One JSON object per line, names sorted."""
    for record in sorted(records, key=lambda r: r.name):
        out.write(json.dumps(record_json(record), separators=(",", ":")) + "\n")


def build_parser(prog: str = "mydns export") -> argparse.ArgumentParser:
    p = UsageParser(prog=prog, description="Write every record the embedded store committed, "
                    "one JSON object per line (owners as the hashes the store keeps), for "
                    "`mydns import`. The lab must be stopped.")
    p.add_argument("--data-dir", type=Path, required=True, metavar="DIR",
                   help="the lab's data folder (the one holding server-1, server-2, ...)")
    p.add_argument("--output", type=Path, default=None, metavar="FILE",
                   help="write here (a private file, 0600) instead of to standard output")
    return p


def main(argv: list[str] | None = None, out: TextIO | None = None,
         err: TextIO | None = None, prog: str = "mydns export") -> int:
    """The command; returns the exit status (0, or 2 for bad usage or a
    folder that cannot be exported). What was exported, in one line on
    ``err``."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    args = build_parser(prog).parse_args(argv)
    try:
        replay = replay_data_folder(args.data_dir)
    except ExportError as exc:
        print(f"{prog}: error: {exc}", file=err)
        return EXIT_USAGE
    if args.output is None:
        write_json_lines(replay.records, out)
        out.flush()
    else:
        try:
            _write_private(args.output, replay.records)
        except OSError as exc:
            print(f"{prog}: error: cannot write {args.output}: {exc.strerror or exc}; "
                  "pass an --output in a folder you can write", file=err)
            return EXIT_USAGE
    print(f"{prog}: {len(replay.records)} names as of log index {replay.applied} of "
          f"{replay.folder.name} ({replay.past_commit} entries past its durable commit index, "
          f"held by a majority; {replay.left_out} not on a majority left out)", file=err)
    return 0


def _write_private(path: Path, records: tuple[Record, ...]) -> None:
    """Write ``path`` whole or not at all, 0600: it holds every owner hash."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE), "w") as f:
            write_json_lines(records, f)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
