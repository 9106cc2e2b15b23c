"""Every process of the lab says its role in ``ps`` and ``top``: the
launcher ``mydns lab``, ``mydns router``, ``mydns server s<i>`` and
``mydns frontend c<i>``, numbered as the dashboard numbers them, and the
fork server they come from, ``mydns forkserver``."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest
import setproctitle

from mydns_lab.experiments.labprocess import LabProcess, wait_for
from mydns_lab.net.procs import set_role_title

# Python's own helper that multiprocessing's spawn starts beside the
# children; it runs no code of ours, so it keeps its command line.
RESOURCE_TRACKER = "from multiprocessing.resource_tracker import main"


def _title(pid: int) -> str:
    """The command line ``ps`` shows for ``pid`` ("" once it is gone)."""
    try:
        return " ".join(part for part in psutil.Process(pid).cmdline() if part)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return ""


def test_set_role_title_names_this_process() -> None:
    before = setproctitle.getproctitle()
    try:
        set_role_title("server s7")
        assert setproctitle.getproctitle() == "mydns server s7"
        assert _title(psutil.Process().pid) == "mydns server s7"
    finally:
        setproctitle.setproctitle(before)
    assert setproctitle.getproctitle() == before


def test_a_title_that_cannot_be_set_is_no_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(title: str) -> None:
        raise OSError("no title for you")

    monkeypatch.setattr(setproctitle, "setproctitle", broken)
    set_role_title("router")  # carries on


@pytest.mark.lab
def test_every_lab_process_shows_its_role(tmp_path: Path) -> None:
    expected = {"mydns lab", "mydns forkserver", "mydns router", "mydns server s1",
                "mydns server s2", "mydns server s3", "mydns frontend c0", "mydns frontend c1"}
    with LabProcess(tmp_path / "data", nservers=3, nclerks=2, seed=5) as lab:
        assert lab.proc is not None
        launcher = lab.proc.pid

        def titles() -> dict[int, str]:
            return {pid: _title(pid) for pid in {launcher, *lab.descendants()}}

        def ours() -> set[str]:
            return {t for t in titles().values() if RESOURCE_TRACKER not in t}

        try:
            wait_for(lambda: ours() == expected, 10,
                     f"the lab's process titles to be {sorted(expected)} ({lab.replay})")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; they are {sorted(ours())}") from None
        untitled = {pid: t for pid, t in titles().items() if not t.startswith("mydns ")}
        assert all(RESOURCE_TRACKER in t for t in untitled.values()), untitled
