"""One lab per data folder: an exclusive ``flock`` on ``<data-dir>/lab.lock``.

The launcher takes the lock first thing in ``Lab.prepare`` (before
``--fresh`` deletes anything) and holds it for the lab's life. The kernel
drops it when the launcher's process ends however it ends, so a SIGKILL
never leaves a folder locked; the pid written in the file only names the
holder for the refusal, the lock itself is the truth. The file stays (a
second lab opens the same inode), and the descriptor is not inherited by
children (Python opens it close-on-exec, and they are forked from a fork
server the launcher started with exec).

The folder is private: created 0700, and once locked an existing one loses
any group and other permissions (it holds the log, the keys' names and
owner hashes); the lock file is 0600.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import stat
from pathlib import Path

from ..storage.files import FILE_MODE, FOLDER_MODE

LOCK_FILE = "lab.lock"


class DataFolderError(Exception):
    """The data folder cannot be used; the message says why and what to do."""


class DataFolderLock:
    """Held from :meth:`take` until :meth:`release` or the process ends."""

    def __init__(self, folder: Path, fd: int) -> None:
        self.folder = folder
        self._fd: int | None = fd

    @classmethod
    def take(cls, folder: Path) -> DataFolderLock:
        """Create ``folder`` if need be, lock it and make it private;
        raises DataFolderError when another process holds it (naming its
        pid) or the folder cannot be made, opened or made private."""
        try:
            folder.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
            fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        except OSError as exc:
            raise DataFolderError(f"cannot use --data-dir {folder}: {exc.strerror or exc}; "
                                  "pass a folder you can write") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_holder(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise DataFolderError(f"cannot lock {folder / LOCK_FILE}: {exc.strerror}") from None
            raise DataFolderError(f"data folder {folder} is in use by another lab ({holder}); "
                                  "stop that lab first, or pass another --data-dir") from None
        try:
            _make_private(folder, fd)
        except OSError as exc:
            os.close(fd)
            raise DataFolderError(f"cannot make data folder {folder} private "
                                  f"({exc.strerror or exc}); run chmod 700 {folder}, or pass "
                                  "a folder of your own as --data-dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(folder, fd)

    def empty_folder(self) -> None:
        """Delete everything in the locked folder but the lock file (``--fresh``)."""
        assert self._fd is not None, "empty_folder after release"
        for path in self.folder.iterdir():
            if path.name == LOCK_FILE:
                continue
            try:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
            except OSError as exc:
                raise DataFolderError(f"--fresh cannot delete {path}: {exc.strerror or exc}; "
                                      "delete it by hand") from None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None


def _make_private(folder: Path, lock_fd: int) -> None:
    """Take group and other permissions away from ``folder`` (never adding
    any: a read-only folder stays read-only) and from the lock file, which
    an older lab may have made 0644."""
    mode = stat.S_IMODE(folder.stat().st_mode)
    if mode & ~FOLDER_MODE:
        os.chmod(folder, mode & FOLDER_MODE)
    os.fchmod(lock_fd, FILE_MODE)


def _read_holder(fd: int) -> str:
    """``pid N`` from the lock file, as its holder wrote it."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return f"pid {text}" if text.isdigit() else "pid not yet written"
