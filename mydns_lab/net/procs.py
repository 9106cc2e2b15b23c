"""What every process of the lab does at start: tie its life to its
parent's, and say its role in ``ps`` and ``top``."""

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
