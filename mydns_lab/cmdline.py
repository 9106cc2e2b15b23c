"""Command-line pieces every entry point shares: one parser whose usage
errors are a single line and exit status 2, and the flag value types.

Used by the lab (``python -m mydns_lab``), the clients (``put.py``,
``query.py``), the simulator, the checker and the analysis, so that a bad
flag reads the same everywhere.
"""

from __future__ import annotations

import argparse
import ipaddress
from typing import NoReturn

EXIT_USAGE = 2
_TRUE = {"true", "t", "1", "yes", "y", "on"}
_FALSE = {"false", "f", "0", "no", "n", "off"}


class UsageParser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line naming the program and
    the problem, then exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_boolean_flag(parser: argparse.ArgumentParser, *names: str, help: str) -> None:
    """A flag that is off unless given as ``--x``, ``--x true`` or ``--x=true``
    (``false``, ``no``, ``0``... turn it off again); see :func:`parse_bool`."""
    parser.add_argument(*names, nargs="?", const=True, default=False, type=parse_bool,
                        metavar="true|false", help=help)


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def positive_int(text: str) -> int:
    value = _whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = _whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def port_number(text: str) -> int:
    value = _whole_number(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"not a port number: {value}")
    return value


def ip_address(text: str) -> str:
    """An IPv4 or IPv6 address in canonical form (``0.0.0.0`` and ``::``:
    every address of the host); host names are refused, since one name
    may stand for several addresses."""
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an IP address such as 127.0.0.1, 0.0.0.0 or ::, got {text!r}") from None


def ttl_seconds(text: str) -> int:
    value = _whole_number(text)
    if not 0 <= value <= 2**31 - 1:
        raise argparse.ArgumentTypeError(f"not a TTL: {value}")
    return value


def non_negative_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value:g}")
    return value


def readable_file(text: str) -> str:
    """A file this process can read, as given."""
    try:
        with open(text, "rb"):
            return text
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {text}: {exc.strerror or exc}") from None
