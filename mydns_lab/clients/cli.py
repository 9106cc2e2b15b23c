"""Pieces the clients share: the default front ends and zone, how
``--server`` and ``--zone`` are read, the error for a bad command line or
unusable local state, and how a file they own is replaced."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..records import InvalidRecord, normalize_name
from .jsonclient import Server, parse_server

DEFAULT_PORT = 9876
DEFAULT_SERVERS = tuple(("127.0.0.1", DEFAULT_PORT + i) for i in range(5))
DEFAULT_ZONE = "mydns."


class UsageError(Exception):
    """Bad command line or unusable local state; the message says what to do."""


def zone_of(text: str) -> str:
    """``--zone`` in the form used everywhere: lower-case, one trailing dot."""
    zone = text.strip().lower().rstrip(".") + "."
    if zone == ".":
        raise UsageError("--zone must not be empty; the service's default is mydns.")
    try:
        normalize_name(zone)
    except InvalidRecord as exc:
        raise UsageError(f"--zone {text!r}: {exc}") from None
    return zone


def front_ends(texts: list[str]) -> list[Server]:
    """The ``--server`` values, or the default front ends when there are none."""
    try:
        return [parse_server(text) for text in texts] or list(DEFAULT_SERVERS)
    except ValueError as exc:
        raise UsageError(f"--server: {exc}") from None


def write_atomically(path: Path, text: str, mode: int) -> None:
    """Replace ``path`` with ``text`` (file mode ``mode``) all at once: a
    reader, or a crash, sees the old file or the new one, never part of
    it. Raises OSError; nothing is left behind when it does."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
