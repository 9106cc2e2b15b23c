"""SIGTERM stops a lab process wherever it lands (mydns_lab.net.procs).

The handler raises StopRequested at whatever line the process is on. It
once was an Exception, and a SIGTERM that landed inside the codec's
``except Exception`` (msgpack failing for any reason becomes a
DecodeError, and receive loops skip those) was swallowed: the launcher ran
on printing its status, and a matrix cell waiting 10 s for it to stop
failed (once in six matrix runs here). Here the signal is made to land
exactly there.

Replay: ``pytest tests/test_stop_request.py``.
"""

from __future__ import annotations

import os
import signal
from multiprocessing import Pipe

import pytest

from mydns_lab import codec
from mydns_lab.core.messages import HardState
from mydns_lab.net.procs import StopRequested, stop_on_sigterm
from mydns_lab.net.transport import FrameReader, Outbox, receive


@pytest.fixture
def sigterm_raises():
    previous = signal.getsignal(signal.SIGTERM)
    stop_on_sigterm()
    yield
    signal.signal(signal.SIGTERM, previous)


def _signal_inside_msgpack(monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM arrives while msgpack unpacks, inside the codec's try."""
    real = codec.msgpack.unpackb

    def unpackb(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])  # delivered here, not later
        return real(*args, **kwargs)
    monkeypatch.setattr(codec.msgpack, "unpackb", unpackb)


def test_the_stop_request_is_no_ordinary_exception() -> None:
    assert issubclass(StopRequested, BaseException)
    assert not issubclass(StopRequested, Exception)


def test_a_sigterm_inside_decode_stops_instead_of_reading_as_bad_input(
        sigterm_raises: None, monkeypatch: pytest.MonkeyPatch) -> None:
    data = codec.encode(HardState(3, 1, 2))
    _signal_inside_msgpack(monkeypatch)
    with pytest.raises(StopRequested):
        codec.decode(data)


def test_a_sigterm_inside_a_receive_loop_stops_it(sigterm_raises: None,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    ours, theirs = Pipe()
    outbox = Outbox(theirs)
    outbox.send(1, HardState(3, 1, 2))
    outbox.flush()
    skipped: list[str] = []
    _signal_inside_msgpack(monkeypatch)
    reader = FrameReader(ours)
    with pytest.raises(StopRequested):
        receive(reader, skipped.append)
    assert skipped == []
    reader.close()
