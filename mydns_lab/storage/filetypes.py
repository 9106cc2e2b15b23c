"""The records file storage writes into a log file, besides Raft's own
types. Pure types; :mod:`mydns_lab.codec` carries them."""

from __future__ import annotations

from dataclasses import dataclass

from ..core.messages import Entry


@dataclass(frozen=True, slots=True)
class FileLogStart:
    """First record of log-G: the generation and the snapshot it follows."""

    generation: int
    snapshot_index: int
    snapshot_term: int


@dataclass(frozen=True, slots=True)
class FileLogBatch:
    """One save's change to the log.

    ``entries`` replace every entry from their first index on (none: no
    change); ``commit`` is the commit index once the save is done.
    """

    entries: tuple[Entry, ...]
    commit: int
