"""``mydns keygen NAME [GRANT ...]``: a new TSIG key for the ``--keys`` file.

    mydns keygen laptop >> keys.txt
    mydns keygen lab-admin gpu1.lab '*.lab' >> keys.txt

Prints two lines, both fit to append to a keys file (format in
:mod:`mydns_lab.dns.tsig` and docs/service.md): a comment saying which
names the key may change and the ``nsupdate -y`` that uses it, then the
key line itself, ``NAME SECRET [GRANT ...]``, where SECRET is 32 fresh
bytes from :func:`secrets.token_bytes` in base64 (an HMAC-SHA256 key as
long as its digest; the keys file takes at least 16). Without grants a key
may change the name equal to its own (less the zone suffix, if it has one),
as the keys file says.

Names and grants are checked by the rule for names the service stores
(:func:`mydns_lab.records.normalize_name`; ``*.x`` grants everything
below ``x``), so every line printed is one the keys file accepts. A bad
NAME or GRANT is one line and exit status 2. Nothing is written: where the
key goes is the caller's choice, and the file must stay private
(``chmod 600``), which the launcher checks.
"""

from __future__ import annotations

import argparse
import base64
import secrets
import sys
from typing import TextIO

from ..cmdline import EXIT_USAGE, UsageParser
from ..records import InvalidRecord, normalize_name
from .cli import DEFAULT_ZONE, UsageError, zone_of

SECRET_BYTES = 32
ALGORITHM = "hmac-sha256"


def key_name(text: str) -> str:
    """NAME: a key name the keys file takes, lower-case without a trailing dot."""
    try:
        return normalize_name(text)
    except InvalidRecord as exc:
        raise argparse.ArgumentTypeError(f"key name {text!r}: {exc}") from None


def grant(text: str) -> str:
    """GRANT: a name relative to the zone, or ``*.x`` for every name below ``x``."""
    try:
        if text.startswith("*."):
            return "*." + normalize_name(text[2:])
        return normalize_name(text)
    except InvalidRecord as exc:
        raise argparse.ArgumentTypeError(f"granted name {text!r}: {exc}") from None


def granted(name: str, grants: tuple[str, ...], zone: str) -> str:
    """The names a key may change, in words, fully qualified in ``zone``
    (the rule of :meth:`mydns_lab.dns.tsig.TsigKey.grants_name`)."""
    own = name.removesuffix("." + zone.rstrip("."))
    words = [f"every name below {g[2:]}.{zone}" if g.startswith("*.") else f"{g}.{zone}"
             for g in grants or (own,)]
    return ", ".join(words)


def key_lines(name: str, grants: tuple[str, ...], zone: str, secret: bytes) -> list[str]:
    """The comment and the key line ``mydns keygen`` prints."""
    encoded = base64.b64encode(secret).decode("ascii")
    comment = (f"# key {name} may change {granted(name, grants, zone)}; "
               f"sign updates with: nsupdate -y {ALGORITHM}:{name}:{encoded}")
    return [comment, " ".join((name, encoded, *grants))]


def build_parser(prog: str = "mydns keygen") -> argparse.ArgumentParser:
    p = UsageParser(prog=prog, description="Print a new TSIG key (32 random bytes, "
                    "HMAC-SHA256) as a comment and a line for the --keys file.")
    p.add_argument("name", type=key_name, metavar="NAME", help="the key's name (laptop)")
    p.add_argument("grants", type=grant, nargs="*", metavar="GRANT",
                   help="names the key may change, relative to the zone; *.x is every name "
                        "below x (default: the name equal to the key's)")
    p.add_argument("--zone", default=DEFAULT_ZONE,
                   help="the service's zone, for the comment (mydns.)")
    return p


def main(argv: list[str] | None = None, out: TextIO | None = None,
         err: TextIO | None = None, prog: str = "mydns keygen") -> int:
    """The command; returns the exit status (0, or 2 for bad usage)."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    args = build_parser(prog).parse_args(argv)
    try:
        zone = zone_of(args.zone)
    except UsageError as exc:
        print(f"{prog}: error: {exc}", file=err)
        return EXIT_USAGE
    for line in key_lines(args.name, tuple(args.grants), zone, secrets.token_bytes(SECRET_BYTES)):
        print(line, file=out)
    return 0
