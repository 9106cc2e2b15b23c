"""Running the real lab (`python -m mydns_lab`) from another program: the
tests, the benchmarks and the workloads.

A :class:`LabProcess` starts the launcher as a subprocess on loopback ports
it checked are free and a temporary data folder, waits until every front
end answers (JSON through the cluster, and DNS from a loaded copy of the
records), and on exit stops it and checks that no process it started is
left. Waiting is always polling a condition against a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import dnslib
import psutil

from ..clients.jsonclient import NoAnswer, json_call

REPO = Path(__file__).resolve().parents[2]


PORT_SPREAD = 20000
"""How far past ``start`` :func:`free_port_range` spreads processes."""


def free_port_range(count: int, start: int = 21000,
                    hosts: tuple[str, ...] = ("127.0.0.1",)) -> int:
    """A port p in [start, 65536 - count] such that p..p+count-1 are free
    for UDP and TCP on every address of ``hosts`` (a multi-machine test
    names its loopback machines, 127.0.0.2-4: a port held on one of them
    is not seen from 127.0.0.1). The search begins at an offset from
    ``start`` that depends on this process's pid (so parallel test runs
    rarely collide) and wraps around below port 65536."""
    span = min(PORT_SPREAD, 65536 - count - start + 1)
    if span < 1:
        raise ValueError(f"no room for {count} ports from {start} below 65536")
    offset = (os.getpid() * 37) % span
    for step in range(0, span, count):
        port = start + (offset + step) % span
        if all(_free(p, host) for p in range(port, port + count) for host in hosts):
            return port
    raise RuntimeError(f"no {count} free ports in a row between {start} and {start + span}")


def _free(port: int, host: str) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str,
             interval_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)  # the polling interval, not a wait for an outcome


def fault_flags(crash: bool, unreliable: bool) -> list[str]:
    """The launcher's fault flags spelt out (``--crash=false``), so a replay
    command says which faults were off as well as which were on."""
    return [f"--crash={str(crash).lower()}", f"--unreliable={str(unreliable).lower()}"]


def front_ends_answer(servers: Iterable[tuple[str, int]]) -> bool:
    """Whether every front end answers a JSON query now (one try of 1 s
    each): the cluster has elected a leader and serves reads."""
    try:
        return all(json_call(server, {"Type": "Query", "Key": "readiness-probe"}, 1.0)
                   .get("Type") == "Response" for server in servers)
    except NoAnswer:
        return False


def dns_answers(servers: Iterable[tuple[str, int]], zone: str) -> bool:
    """Whether every front end answers DNS from a loaded copy of the
    records now: a query for a name of ``zone`` gets anything but SERVFAIL
    (which a front end says until its copy has loaded) within 1 s."""
    query = dnslib.DNSRecord.question(f"readiness-probe.{zone}", "A").pack()
    for server in servers:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(1.0)
            try:
                sock.sendto(query, server)
                reply = sock.recv(4096)
            except OSError:
                return False
        if len(reply) < 4 or reply[3] & 0x0F == dnslib.RCODE.SERVFAIL:
            return False
    return True


class LabProcess:
    def __init__(self, data_dir: Path, *flags: str, nservers: int = 3, nclerks: int = 2,
                 seed: int = 1, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.nclerks = nclerks
        self.seed = seed
        self.port = port or free_port_range(nclerks)
        # HTTP on ports this process picks too (unless the flags choose), not the shared 9980.
        self.http_port = (int(flags[flags.index("--http-port") + 1]) if "--http-port" in flags
                          else free_port_range(nclerks, start=41000))
        http = () if "--http-port" in flags else ("--http-port", str(self.http_port))
        self.args = [sys.executable, "-m", "mydns_lab", "--no-dashboard",
                     "--data-dir", str(data_dir), "--port", str(self.port), "--seed", str(seed),
                     "--nservers", str(nservers), "--nclerks", str(nclerks), *http, *flags]
        self.log_path = data_dir.parent / f"{data_dir.name}-launcher.log"
        zone = flags[flags.index("--zone") + 1] if "--zone" in flags[:-1] else "mydns."
        self.zone = zone if zone.endswith(".") else zone + "."
        self.proc: subprocess.Popen | None = None
        self.started_pids: set[int] = set()

    @property
    def replay(self) -> str:
        return " ".join(self.args[2:])

    def servers(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", self.port + i) for i in range(self.nclerks)]

    def start(self) -> LabProcess:
        """:meth:`launch`, then :meth:`wait_until_serving`."""
        return self.launch().wait_until_serving()

    def wait_until_serving(self) -> LabProcess:
        """Wait until every front end answers; note the processes started."""
        assert self.proc is not None
        wait_for(self._all_answer, 30, f"every front end of the lab to answer ({self.replay})")
        self.started_pids = self.descendants() | {self.proc.pid}
        return self

    def launch(self) -> LabProcess:
        """Start the launcher and return at once (to watch a start-up)."""
        # A second launch would lose the first launcher, and stop() would
        # leave that whole lab running.
        assert self.proc is None, f"this lab was launched already ({self.replay})"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        log.close()
        return self

    def descendants(self) -> set[int]:
        assert self.proc is not None
        try:
            return {p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)}
        except psutil.NoSuchProcess:
            return set()

    def call(self, index: int, request: dict[str, Any], timeout_s: float = 3.0,
             attempts: int = 3) -> dict[str, Any]:
        return json_call(self.servers()[index % self.nclerks], request, timeout_s, attempts)

    def stop(self) -> dict[str, Any]:
        """SIGTERM the launcher; it must exit 0 within 5 s and leave nothing."""
        assert self.proc is not None
        pids = self.started_pids | self.descendants()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=10)
        assert code == 0, f"launcher exited {code}; see {self.log_path}"
        self.assert_gone(pids)
        return json.loads((self.data_dir / "last-run.json").read_text())

    def kill_everything(self) -> None:
        """SIGKILL the launcher and every child at the same moment."""
        assert self.proc is not None
        pids = self.started_pids | self.descendants()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=10)
        self.assert_gone(pids)

    def assert_gone(self, pids: set[int]) -> None:
        def gone() -> bool:
            return not any(psutil.pid_exists(p) and
                           psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids)
        wait_for(gone, 5, f"processes {sorted(pids)} to exit")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _all_answer(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"launcher exited early:\n{self.output()[-3000:]}")
        return front_ends_answer(self.servers()) and dns_answers(self.servers(), self.zone)

    def __enter__(self) -> LabProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.stop()
            except Exception:
                self.kill_everything()
                raise
