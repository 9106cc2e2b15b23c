"""``python -m mydns_lab.linearizability FILE --format F``: check a recorded
history. Exit status 0 linearizable, 1 not linearizable, 2 unknown or error."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from ..cmdline import UsageParser
from .formats import FORMATS, HistoryFormatError, load_history
from .search import LINEARIZABLE, UNKNOWN_VERDICT, check
from .timeline import write_html_timeline


def _arguments(argv: Sequence[str] | None, formats: Sequence[str]) -> argparse.Namespace:
    parser = UsageParser(
        prog="python -m mydns_lab.linearizability",
        description="Check a recorded history for linearizability. Exit status: "
                    "0 linearizable, 1 not linearizable, 2 unknown or error.")
    parser.add_argument("file", type=Path, help="history file")
    parser.add_argument("--format", required=True, choices=formats,
                        help="porcupine-kv: porcupine's KV histories; jepsen: Jepsen etcd register logs")
    parser.add_argument("--no-partition", action="store_true",
                        help="check a KV history as one object instead of key by key")
    parser.add_argument("--timeout", type=float, default=None, metavar="S",
                        help="give up with 'unknown' after S seconds")
    parser.add_argument("--html", type=Path, default=None, metavar="PATH",
                        help="where to write the timeline of a violation "
                             "(default ./linearizability-<file name>.html)")
    args = parser.parse_args(argv)
    if args.timeout is not None and not args.timeout >= 0:
        parser.error(f"--timeout must be a number of seconds >= 0, not {args.timeout}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status."""
    args = _arguments(argv, FORMATS)
    try:
        ops, model = load_history(args.file, args.format, partition=not args.no_partition)
    except (OSError, UnicodeDecodeError) as err:
        print(f"error: cannot read history {args.file}: {err}; check the path", file=sys.stderr)
        return 2
    except HistoryFormatError as err:
        print(f"error: {err}; is it a {args.format} history?", file=sys.stderr)
        return 2
    result = check(ops, model, timeout_s=args.timeout)
    print(result.verdict)
    if result.verdict == UNKNOWN_VERDICT:
        print(result.explain())
        return 2
    if result.verdict == LINEARIZABLE:
        return 0
    print(result.explain())
    target = args.html or Path.cwd() / f"linearizability-{args.file.stem}.html"
    try:
        print(f"timeline: {write_html_timeline(result, target)}")
    except OSError as err:
        print(f"error: cannot write the timeline {target}: {err}; pass --html PATH", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
