"""What a front end listens on, and how it tells the process that started
it whether it does: the sockets the launcher checks before anything starts
and a front end names when it cannot bind, and the one message of the
start pipe."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Proto(StrEnum):
    UDP = "UDP"
    TCP = "TCP"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One socket the lab listens on: what the launcher checks before
    anything starts, and what a front end names when it cannot bind.
    ``port_flag`` is the flag that chose the port, for the hint."""

    proto: Proto
    address: str
    port: int
    port_flag: str = "--port"

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.proto} {host}:{self.port}"


@dataclass(frozen=True, slots=True)
class FrontEndListening:
    """Sent once on the start pipe: every endpoint is bound; serving."""

    index: int


@dataclass(frozen=True, slots=True)
class FrontEndFailed:
    """Sent once on the start pipe instead, before the process exits 1:
    the front end could not start. ``endpoint`` and ``errno`` are set when
    binding that endpoint failed; ``reason`` is the error's own words."""

    index: int
    reason: str
    endpoint: Endpoint | None = None
    errno: int | None = None
