"""What every process of the lab does at start: tie its life to its
parent's, say its role in ``ps`` and ``top``, and turn SIGTERM into
:class:`StopRequested`."""

from __future__ import annotations

import signal


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies, so no server
    or clerk outlives a launcher that was itself killed."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the pipe EOF still stops us
        pass


def set_role_title(role: str) -> None:
    """Show this process as ``mydns <role>`` in ``ps`` and ``top``
    (``lab``, ``router``, ``server s2``, ``frontend c0``: the dashboard's
    names). Each process calls it once at its entry point, next to
    :func:`die_with_parent`. The title is a courtesy: if it cannot be set,
    the process runs on under its old one."""
    try:
        from setproctitle import setproctitle
        setproctitle(f"mydns {role}")
    except Exception:  # a missing or broken setproctitle must not stop a server
        pass


class StopRequested(BaseException):
    """Raised where the process is when SIGTERM arrives (see
    :func:`stop_on_sigterm`). A BaseException, as KeyboardInterrupt is: an
    ``except Exception`` it passes through on the way out (the codec turns
    any failure of msgpack into a DecodeError, and a receive loop skips
    those) would otherwise swallow the request to stop, and the process
    would run on as if no signal had come."""


def _raise_stop_requested(_signum: int, _frame: object) -> None:
    raise StopRequested()


def stop_on_sigterm() -> None:
    """From now on SIGTERM raises :class:`StopRequested` in this process."""
    signal.signal(signal.SIGTERM, _raise_stop_requested)
