"""``mydns resolver install|uninstall``: send the zone's names to the service
through this machine's own resolver, so every program (browsers, ssh,
ping) resolves ``laptop.mydns.``, not only dig with ``@server -p port``.

    sudo mydns resolver install --server 127.0.0.1:9876 [--zone mydns.]
    sudo mydns resolver uninstall [--zone mydns.]
    mydns resolver install --server 127.0.0.1:9876 --dry-run

One file per zone, in the layout of the system's resolver:

* **systemd** (Linux with systemd-resolved): the drop-in
  ``/etc/systemd/resolved.conf.d/mydns-<zone>.conf`` with ``[Resolve]``,
  ``DNS=ADDR:PORT`` and the routing domain ``Domains=~<zone>``. resolved
  reads it on restart, so install and uninstall then run ``systemctl
  restart systemd-resolved`` themselves (when the root is the real ``/``
  and resolved runs); if that fails, the change stays and the line says to
  run it by hand (exit status 1).
  Installing needs resolved running (``/run/systemd/resolve`` exists):
  without it the drop-in would do nothing.
* **macos**: ``/etc/resolver/<zone>`` with ``nameserver ADDR`` and ``port
  PORT``, which macOS reads at once (``scutil --dns`` lists it).

The layout is the platform's (``--layout`` chooses another). The first
line of each file is :data:`MARKER`: ``install`` overwrites only a file
that carries it, and ``uninstall`` removes exactly the zone's file and only
if it carries it, so a file written by hand or by another tool is never
touched. ``--dry-run`` prints the path and what would be written (or
removed) and changes nothing. Every error (a bad ``--server``, not root, no
systemd-resolved, a file that is not ours, a write that failed) is one
line on stderr and exit status 2; a restart that failed after the file was
written is exit status 1.

``--root DIR`` (hidden) puts every path under DIR instead of ``/``, for
tests: no root check and no restart there.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ..cmdline import EXIT_USAGE, UsageParser, ip_address, port_number
from .cli import DEFAULT_ZONE, UsageError, write_atomically, zone_of

LAYOUTS = ("systemd", "macos")
MARKER = "# Written by `mydns resolver install`; `mydns resolver uninstall` removes it."
SYSTEMD_DROPIN_DIR = "etc/systemd/resolved.conf.d"
SYSTEMD_RUNTIME_DIR = "run/systemd/resolve"  # exists while systemd-resolved runs
MACOS_RESOLVER_DIR = "etc/resolver"
RESTART = ("systemctl", "restart", "systemd-resolved")
RESTART_TIMEOUT_S = 30.0
EXIT_RESTART_FAILED = 1


class ResolverError(Exception):
    """Why nothing was changed; the message says what to do."""


@dataclass(frozen=True, slots=True)
class Route:
    """Where the zone's route lives and what it says."""

    layout: str
    zone: str          # lower-case, one trailing dot
    path: Path         # the file, under the root
    text: str          # the file's whole content


def server_address(text: str) -> tuple[str, int]:
    """``--server``: ``ADDR:PORT`` with an IP address (``[::1]:9876`` for
    IPv6); a resolver needs an address, not a host name."""
    host, colon, port = text.strip().rpartition(":")
    try:
        if not colon:
            raise argparse.ArgumentTypeError("no port")
        address = ip_address(host.removeprefix("[").removesuffix("]"))
        number = port_number(port)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected ADDR:PORT with an IP address, such as 127.0.0.1:9876 or [::1]:9876, "
            f"got {text!r}") from None
    if address in ("0.0.0.0", "::"):
        raise argparse.ArgumentTypeError(
            f"{address} is every address of a host, not one to send queries to; give the "
            "address a front end listens on, such as 127.0.0.1:9876")
    return address, number


def detected_layout(platform: str = sys.platform) -> str:
    if platform == "darwin":
        return "macos"
    if platform.startswith("linux"):
        return "systemd"
    raise ResolverError(f"no resolver layout for platform {platform!r}; pass --layout "
                        "systemd or --layout macos, or route the zone by hand")


def route(layout: str, zone: str, server: tuple[str, int] | None, root: Path) -> Route:
    """The zone's file in ``layout`` under ``root``; its text routes the zone to
    ``server`` (empty when no server is given, as for uninstall)."""
    stem = zone.rstrip(".")
    address, port = server or ("", 0)
    if layout == "systemd":
        path = root / SYSTEMD_DROPIN_DIR / f"mydns-{stem}.conf"
        host = f"[{address}]" if ":" in address else address
        lines = ["[Resolve]", f"DNS={host}:{port}", f"Domains=~{stem}"]
    else:
        path = root / MACOS_RESOLVER_DIR / stem
        lines = [f"nameserver {address}", f"port {port}"]
    text = "\n".join([MARKER, *lines]) + "\n" if server else ""
    return Route(layout, zone, path, text)


def ours(path: Path) -> bool:
    """Whether ``path`` is a file ``install`` wrote (its first line is MARKER)."""
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            return handle.readline().rstrip("\n") == MARKER
    except OSError:
        return False


def install(target: Route, root: Path, dry_run: bool, out: TextIO) -> bool:
    """Write ``target`` (or, with ``dry_run``, say what would be written);
    returns whether anything changed (would change)."""
    if target.layout == "systemd" and not (root / SYSTEMD_RUNTIME_DIR).is_dir():
        raise ResolverError(
            f"systemd-resolved is not running here (no {root / SYSTEMD_RUNTIME_DIR}), so a "
            "drop-in would do nothing; start it (systemctl enable --now systemd-resolved) or "
            "route the zone in your resolver by hand")
    if target.path.exists() and not ours(target.path):
        raise ResolverError(f"{target.path} exists and was not written by mydns resolver "
                            "install; leaving it alone: remove it yourself, or choose another "
                            "--zone")
    try:
        if target.path.exists() and target.path.read_text(encoding="utf-8") == target.text:
            print(f"{target.path} already routes {target.zone} there; unchanged", file=out)
            return False
        if dry_run:
            print(f"would write {target.path}:", file=out)
            out.write(target.text)
            return True
        _check_privileges(target.path, root)
        target.path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        write_atomically(target.path, target.text, 0o644)
    except OSError as exc:
        raise ResolverError(f"cannot write {target.path}: {exc.strerror or exc}") from None
    print(f"wrote {target.path}: names under {target.zone} now go to the service", file=out)
    return True


def uninstall(target: Route, root: Path, dry_run: bool, out: TextIO) -> bool:
    """Remove ``target.path`` if ``install`` wrote it (or, with ``dry_run``,
    say so); returns whether anything changed (would change)."""
    if not target.path.exists():
        print(f"nothing to remove: {target.path} does not exist", file=out)
        return False
    if not ours(target.path):
        raise ResolverError(f"{target.path} was not written by mydns resolver install; "
                            "leaving it alone: remove it yourself if you mean to")
    if dry_run:
        print(f"would remove {target.path}", file=out)
        return True
    _check_privileges(target.path, root)
    try:
        target.path.unlink()
    except OSError as exc:
        raise ResolverError(f"cannot remove {target.path}: {exc.strerror or exc}") from None
    print(f"removed {target.path}", file=out)
    return True


def _check_privileges(path: Path, root: Path) -> None:
    if root == Path("/") and os.geteuid() != 0:
        raise ResolverError(f"changing {path} needs root: run it with sudo (or add --dry-run "
                            "to see what it would do)")


def reread(target: Route, root: Path, dry_run: bool, out: TextIO, err: TextIO) -> int:
    """After a change: have the resolver read its files again, or say how.
    Returns the exit status."""
    if target.layout == "macos":
        if not dry_run:
            print("macOS reads it at once; check with: scutil --dns", file=out)
        return 0
    command = " ".join(RESTART)
    if dry_run:
        print(f"then it would run: {command}", file=out)
        return 0
    if not (root / SYSTEMD_RUNTIME_DIR).is_dir():
        return 0  # not running: it reads the files when it starts
    if root != Path("/") or shutil.which(RESTART[0]) is None:
        print(f"now run: {command}", file=out)
        return 0
    try:
        done = subprocess.run(RESTART, capture_output=True, text=True, timeout=RESTART_TIMEOUT_S)
        if done.returncode == 0:
            print(f"ran: {command}", file=out)
            return 0
        problem = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
    except (OSError, subprocess.TimeoutExpired) as exc:
        problem = str(exc)
    print(f"mydns resolver: {command} failed ({problem}); the change is made, run it "
          "yourself", file=err)
    return EXIT_RESTART_FAILED


def build_parser(prog: str = "mydns resolver") -> argparse.ArgumentParser:
    p = UsageParser(prog=prog, description="Route the zone to MyDNS through this machine's "
                    "resolver (systemd-resolved on Linux, /etc/resolver on macOS), or undo it.")
    p.add_argument("action", choices=["install", "uninstall"])
    p.add_argument("--server", type=server_address, default=None, metavar="ADDR:PORT",
                   help="the front end to send the zone's queries to (install; such as "
                        "127.0.0.1:9876)")
    p.add_argument("--zone", default=DEFAULT_ZONE, help="the service's zone (mydns.)")
    p.add_argument("--dry-run", action="store_true",
                   help="print what would be written or removed, and where; change nothing")
    p.add_argument("--layout", choices=LAYOUTS, default=None,
                   help="systemd (systemd-resolved drop-in) or macos (/etc/resolver); "
                        "default: this system's")
    p.add_argument("--root", type=Path, default=Path("/"), help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None, out: TextIO | None = None,
         err: TextIO | None = None, prog: str = "mydns resolver") -> int:
    """The command; returns the exit status (0 done, 1 the restart failed, 2 an
    error, nothing changed)."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.action == "install" and args.server is None:
        parser.error("install needs --server ADDR:PORT, the front end to route the zone to")
    try:
        layout = args.layout or detected_layout()
        target = route(layout, zone_of(args.zone), args.server, args.root)
        act = install if args.action == "install" else uninstall
        if not act(target, args.root, args.dry_run, out):
            return 0
    except (UsageError, ResolverError) as exc:
        print(f"{prog}: error: {exc}", file=err)
        return EXIT_USAGE
    return reread(target, args.root, args.dry_run, out, err)
