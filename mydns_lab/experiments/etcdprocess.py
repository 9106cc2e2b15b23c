"""A real etcd cluster on this host, for tests, benchmarks and trying the
etcd store by hand: Debian's ``etcd`` (package etcd-server), one member per
loopback address (127.0.0.2, .3, .4 stand for three machines), each with
its own data folder.

:class:`EtcdCluster` starts the members, waits until every one reports
healthy, can kill one (SIGKILL: the machine is gone) and start it again
from its folder, and on exit stops every process it started. Waiting is
polling a condition against a deadline.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .labprocess import wait_for

ETCD = "etcd"
START_TIMEOUT_S = 30.0


def etcd_binary() -> str | None:
    """The path of Debian's etcd, or None when it is not installed."""
    return shutil.which(ETCD)


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    host: str
    client_port: int
    peer_port: int

    @property
    def client_url(self) -> str:
        return f"http://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"


MACHINES = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
"""Three loopback addresses standing for three machines: where a test's
etcd members listen (pick their ports with ``free_port_range(..., hosts=MACHINES)``)."""


class EtcdCluster:
    """``len(hosts)`` etcd members, member i on ``hosts[i]`` with client
    port ``client_port`` and peer port ``client_port + 1`` (each host is
    its own address, so the ports repeat). Use as a context manager."""

    def __init__(self, folder: Path, hosts: tuple[str, ...] = MACHINES,
                 client_port: int = 23790, log_level: str = "error") -> None:
        self.folder = folder
        self.members = tuple(Member(f"m{i}", host, client_port, client_port + 1)
                             for i, host in enumerate(hosts))
        self._log_level = log_level
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, Any] = {}

    @property
    def endpoints(self) -> str:
        """Every member's client URL, comma-separated (``--etcd-endpoints``)."""
        return ",".join(m.client_url for m in self.members)

    def __enter__(self) -> EtcdCluster:
        try:
            for member in self.members:
                self.start_member(member, new=True)
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start_member(self, member: Member, new: bool = False) -> None:
        """Start ``member`` from its folder (``new``: the cluster's first start)."""
        binary = etcd_binary()
        if binary is None:
            raise RuntimeError("etcd is not installed: apt-get install etcd-server")
        data = self.folder / member.name
        data.mkdir(parents=True, exist_ok=True)
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        command = [binary, "--name", member.name, "--data-dir", str(data),
                   "--listen-client-urls", member.client_url,
                   "--advertise-client-urls", member.client_url,
                   "--listen-peer-urls", member.peer_url,
                   "--initial-advertise-peer-urls", member.peer_url,
                   "--initial-cluster", initial,
                   "--initial-cluster-state", "new" if new else "existing",
                   "--initial-cluster-token", "mydns-test",
                   "--heartbeat-interval", "100", "--election-timeout", "1000",
                   "--log-level", self._log_level, "--logger", "zap"]
        log = open(self.folder / f"{member.name}.log", "ab")
        self._logs[member.name] = log
        self._procs[member.name] = subprocess.Popen(command, stdout=log, stderr=log,
                                                    stdin=subprocess.DEVNULL)

    def kill_member(self, member: Member) -> None:
        """SIGKILL ``member``, as if its machine lost power."""
        proc = self._procs.pop(member.name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        self._logs.pop(member.name).close()

    def restart_member(self, member: Member) -> None:
        self.start_member(member)
        wait_for(lambda: self.status(member) is not None, START_TIMEOUT_S,
                 f"etcd member {member.name} to serve again")

    def wait_healthy(self, timeout_s: float = START_TIMEOUT_S) -> None:
        wait_for(lambda: all(self.status(m) is not None for m in self.members), timeout_s,
                 "every etcd member to serve")
        wait_for(lambda: self.leader() is not None, timeout_s, "an etcd leader")

    def status(self, member: Member) -> dict[str, Any] | None:
        """The member's ``/v3/maintenance/status`` answer, or None when it
        does not answer."""
        try:
            return _post(member.client_url + "/v3/maintenance/status", {})
        except (OSError, ValueError):
            return None

    def leader(self) -> Member | None:
        """The member that says it leads, as seen by any member that answers."""
        by_id = {}
        leader_id = None
        for member in self.members:
            status = self.status(member)
            if status is None:
                continue
            by_id[status["header"]["member_id"]] = member
            leader_id = status.get("leader", leader_id)
        return by_id.get(leader_id) if leader_id else None

    def stop(self) -> None:
        """SIGTERM every member still running, SIGKILL what lingers."""
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 10
        for proc in self._procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self._procs.clear()
        for log in self._logs.values():
            log.close()
        self._logs.clear()


def _post(url: str, body: dict[str, Any], timeout_s: float = 1.0) -> dict[str, Any]:
    request = urllib.request.Request(url, json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        raise OSError(f"{url}: HTTP {exc.code}") from None
