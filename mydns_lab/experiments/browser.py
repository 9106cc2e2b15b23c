"""A page in a real headless browser (Debian's ``chromium``): its DOM after
loading, or a screenshot. For the status page's test and for
``scripts/status_page_screenshot.py``, which writes docs/status-page.png.

Each call starts one browser with a profile of its own in a temporary
folder, in a process group of its own, and ends that group before it
returns: no browser process outlives a call, also on a timeout.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync")
BROWSER_TIMEOUT_S = 30.0


class BrowserFailed(Exception):
    """The browser exited non-zero or did not finish in time; the message
    holds the end of what it printed."""


def find_chromium() -> str | None:
    """The browser's path, or None when it is not installed
    (``apt-get install chromium``)."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def dump_dom(url: str, *flags: str, binary: str | None = None) -> str:
    """The page's DOM once loaded, scripts run, serialised as HTML. (Headless
    chromium dumps and screenshots through script, so neither works with
    scripts off: what a browser without them shows is the HTML served.)"""
    return _run(url, "--dump-dom", *flags, binary=binary)


def screenshot(url: str, path: Path, width: int = 1280, height: int = 800,
               binary: str | None = None) -> Path:
    """A PNG of the page's first ``width`` x ``height`` pixels at ``path``."""
    _run(url, f"--screenshot={path.resolve()}", f"--window-size={width},{height}",
         "--hide-scrollbars", binary=binary)
    if not path.is_file():
        raise BrowserFailed(f"the browser wrote no screenshot at {path}")
    return path


def _run(url: str, *flags: str, binary: str | None) -> str:
    binary = binary or find_chromium()
    if binary is None:
        raise BrowserFailed("chromium is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="mydns-chromium-",
                                     ignore_cleanup_errors=True) as profile:
        proc = subprocess.Popen([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                                 *flags, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, text=True, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=BROWSER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            _end_group(proc.pid)
            out, err = proc.communicate()
            raise BrowserFailed(f"{binary} took over {BROWSER_TIMEOUT_S:g} s on {url}: "
                                f"{err[-2000:]}") from None
        finally:
            # Its renderer and helpers share the group; a PGID stays reserved
            # while any member lives, so this ends only what this call started.
            _end_group(proc.pid)
    if proc.returncode != 0:
        raise BrowserFailed(f"{binary} exited {proc.returncode} on {url}: {err[-2000:]}")
    return out


def _end_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
