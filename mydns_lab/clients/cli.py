"""Pieces put.py and query.py share: the default front ends and zone, how
``--server`` and ``--zone`` are read, and the error for a bad command line
or unusable local state."""

from __future__ import annotations

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
