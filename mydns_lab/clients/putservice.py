"""``put.py --install-service``: a systemd unit that keeps this machine's
name current, started at boot (a system unit) or at login (a user unit).

    python put.py laptop --install-service                # user unit (system when root)
    sudo python put.py gpu1 --install-service system --server 10.0.0.5:9876

The unit runs ``python -m mydns_lab put`` with the same Python, name,
``--server``, ``--zone``, ``--ip``, ``--interval`` and an absolute
``--token-file``, after the network is up; put.py exits only on a refusal
(the line is in ``journalctl``), and systemd starts it again a minute later.
Nothing is uploaded and nothing enabled here: the last line says the two
``systemctl`` commands that start it. A unit file written by hand (without
:data:`MARKER`) is never overwritten.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from .cli import UsageError, write_atomically

MARKER = "# Written by `put.py --install-service`; delete it to uninstall."
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")
RESTART_AFTER_S = 60


@dataclass(frozen=True)
class Unit:
    """One unit file: where it goes, what it holds, and how to start it."""

    path: Path
    text: str
    start: str   # the commands that load and start it


def unit_dir(scope: str, environ: Mapping[str, str]) -> Path:
    """Where systemd looks for ``scope``'s (``user`` or ``system``) units."""
    if scope == "system":
        return SYSTEM_UNIT_DIR
    config = environ.get("XDG_CONFIG_HOME") or str(Path(environ.get("HOME", "~")).expanduser()
                                                   / ".config")
    return Path(config) / "systemd" / "user"


def put_unit(scope: str, folder: Path, fqdn: str, name: str, put_args: list[str]) -> Unit:
    """The unit for ``name`` (relative; ``fqdn`` for the description) that
    runs put.py with ``put_args`` (everything after the name)."""
    command = [sys.executable, "-m", "mydns_lab", "put", name, *put_args]
    user = ["--user"] if scope == "user" else []
    unit_name = f"mydns-put-{name}.service"
    text = "\n".join([
        MARKER,
        "[Unit]",
        f"Description=MyDNS: keep {fqdn} pointed at this machine's addresses",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "ExecStart=" + " ".join(_systemd_word(word) for word in command),
        "Restart=on-failure",
        f"RestartSec={RESTART_AFTER_S}",
        "",
        "[Install]",
        f"WantedBy={'default.target' if scope == 'user' else 'multi-user.target'}",
        "",
    ])
    systemctl = " ".join(["systemctl", *user])
    return Unit(folder / unit_name, text,
                f"{systemctl} daemon-reload && {systemctl} enable --now {unit_name}")


def install(unit: Unit) -> str:
    """Write ``unit``; the line to print. Raises UsageError (one line)."""
    if unit.path.exists():
        first = unit.path.read_text(encoding="utf-8", errors="replace").split("\n", 1)[0]
        if first != MARKER:
            raise UsageError(f"{unit.path} exists and was not written by put.py "
                             "--install-service; leaving it alone: remove it yourself")
    try:
        unit.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(unit.path, unit.text, 0o644)
    except OSError as exc:
        raise UsageError(f"cannot write {unit.path}: {exc.strerror or exc} (a system unit "
                         "needs root; --install-service user writes one for you alone)") from None
    return f"wrote {unit.path}; start it now and at every boot with: {unit.start}"


def _systemd_word(word: str) -> str:
    """``word`` as one word of a systemd command line: ``%`` and ``$`` are
    systemd's own (specifiers, variables), doubled to stand for themselves;
    a word with a space or a quote is double-quoted."""
    word = word.replace("%", "%%").replace("$", "$$")
    if word and not any(c in word for c in " \t\"'\\;"):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'
