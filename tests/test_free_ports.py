"""free_port_range, the helper every lab test picks its ports with: the
range it returns is always inside 1..65535, whatever this process's pid.

Replay: ``pytest tests/test_free_ports.py``.
"""

from __future__ import annotations

import socket

import pytest

from mydns_lab.experiments import labprocess
from mydns_lab.experiments.etcdprocess import MACHINES
from mydns_lab.experiments.labprocess import free_port_range


@pytest.mark.parametrize("pid", [1, 1234, 4_000_000, 4_194_303])
@pytest.mark.parametrize("count, start", [(1, 47000), (2, 45000), (3, 21000), (5, 65531)])
def test_the_range_stays_below_65536(monkeypatch: pytest.MonkeyPatch, pid: int, count: int,
                                     start: int) -> None:
    monkeypatch.setattr(labprocess.os, "getpid", lambda: pid)
    monkeypatch.setattr(labprocess, "_free", lambda port, host: True)  # any port will do
    port = free_port_range(count, start)
    assert start <= port and port + count - 1 <= 65535, (pid, count, start, port)


def test_busy_ports_are_skipped_and_the_search_wraps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(labprocess.os, "getpid", lambda: 1)  # offset 37
    monkeypatch.setattr(labprocess, "_free", lambda port, host: port < 60037)
    assert free_port_range(2, 60000) == 60000  # everything from the offset up was busy


def test_no_room_is_an_error() -> None:
    with pytest.raises(ValueError, match="no room for 3 ports from 65535"):
        free_port_range(3, 65535)


def test_a_port_held_on_another_loopback_machine_is_not_free(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A multi-machine test's etcd members listen on 127.0.0.2-4: a port
    held there is busy for that test, though 127.0.0.1 could bind it."""
    monkeypatch.setattr(labprocess.os, "getpid", lambda: 0)  # the search starts at ``start``
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.3", 0))
        port = held.getsockname()[1]
        assert free_port_range(1, port) == port  # 127.0.0.1 alone sees nothing there
        assert free_port_range(1, port, MACHINES) != port
