"""The disk alarm of a server process: stop taking writes before the data
folder's disk is full, take them again once space is freed.

Like etcd's NOSPACE alarm, but checked against the free space itself: a
server refuses new writes while the free space is under what its next
compaction may need (a new snapshot beside the old one and a log of up to
the compaction bound), for every server that may share the disk (the lab
puts all of them on one), and takes them again once there is a margin
more. Reads, watches and elections go on: they write little or nothing.
A write that still fails for want of space (another program filled the
disk at once) raises the alarm too; :func:`out_of_space` tells that error.
"""

from __future__ import annotations

import errno
import shutil
from dataclasses import dataclass
from pathlib import Path

MIN_FREE_BYTES = 1 << 20
"""Never let free space drop under this, whatever the store's size."""
RESUME_MARGIN = 1.25
"""Writes resume once free space is this many times the reserve, so a
server at the edge does not flap between refusing and accepting."""
_NO_SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


def out_of_space(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a write that found no space."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in _NO_SPACE_ERRNOS:
            return True
        exc = exc.__cause__  # type: ignore[assignment]
    return False


@dataclass(slots=True)
class DiskAlarm:
    """The alarm of one server's data ``folder``; ``reason`` is why writes
    are refused, empty while they are taken."""

    folder: Path
    servers_on_disk: int
    reason: str = ""

    def reserve_bytes(self, snapshot_bytes: int, log_bound_bytes: int) -> int:
        """Free space a compaction may need, for every server on the disk."""
        per_server = 2 * snapshot_bytes + log_bound_bytes
        return self.servers_on_disk * per_server + MIN_FREE_BYTES

    def check(self, snapshot_bytes: int, log_bound_bytes: int) -> bool:
        """Look at the free space now; True when the alarm changed."""
        try:
            free = shutil.disk_usage(self.folder).free
        except OSError:
            return False  # cannot tell: leave the alarm as it is
        reserve = self.reserve_bytes(snapshot_bytes, log_bound_bytes)
        if not self.reason and free < reserve:
            self.raise_alarm(f"{free >> 10} KiB free, under the {reserve >> 10} KiB a "
                             "compaction may need")
            return True
        if self.reason and free >= reserve * RESUME_MARGIN:
            self.reason = ""
            return True
        return False

    def raise_alarm(self, why: str) -> None:
        self.reason = (f"the disk of {self.folder} is full ({why}); writes are refused "
                       "until space is freed there")
