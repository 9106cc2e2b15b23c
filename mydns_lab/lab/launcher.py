"""The lab launcher: forks the router, the servers and the clerks, injects
crashes, shows what happens and stops everything cleanly.

The launcher starts every process (the servers and clerks through
multiprocessing's fork server, see ``_ctx``). Each server and clerk has one
pipe to the router; the router has a control pipe to the launcher, which
also carries every status report. When a server is restarted its new pipe's
router end is passed to the router with ``reduction.send_handle``.

Starting: ``prepare`` locks the data folder (one lab per folder, see
:mod:`.datalock`), checks every socket the front ends will bind and the
keys file, and only then touches the data; ``start`` spawns everything and
waits until every front end says it listens (:class:`FrontEndListening`)
or one says it cannot (:class:`FrontEndFailed`), which raises StartFailure.

Stopping (duration reached, Ctrl-C, SIGTERM): SIGTERM to every child, a
wait of at most 3 s in all, then SIGKILL for any left; the final statistics
print as a table and go to ``<data-dir>/last-run.json``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import stat
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from multiprocessing import forkserver, reduction
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Callable

from ..admission import AdmissionPolicy
from ..codec import DecodeError, decode
from ..core.quorum import majority
from ..dns.nameservers import NameServer, default_name_servers
from ..dns.tsig import KeyFileError, KeyRing
from ..etcd.options import EtcdOptions
from ..net.faults import LinkFaults
from ..net.transport import FrameReader, receive
from ..net.endpoints import Endpoint, FrontEndFailed, FrontEndListening
from ..service.process import listen_endpoints, run_clerk
from ..service.settings import LOOPBACK_NETWORKS, FrontEndSettings
from ..storage.files import FILE_MODE, CorruptStorageError, holds_saved_state, mark_recovering
from .datalock import DataFolderError, DataFolderLock
from .etcdmembers import MemberPoller
from .preflight import bind_problem, endpoint_problem
from .router import run_router
from .server import ServerSettings, run_server, server_folder
from .state import LabState

CLERK_ADDRESS_BASE = 100
MAX_SERVERS = CLERK_ADDRESS_BASE  # server addresses 1..n stay below the clerks'
FRONT_END_START_S = 20.0
CLUSTER_FILE = "cluster.json"
STOP_GRACE_S = 3.0
STATUS_RECENT_CHANGES = 10  # leader changes status.json lists
# Children come from multiprocessing's fork server: a fresh interpreter the
# launcher starts once (``Lab.prepare``), which imports the children's code
# once and then forks one child per request. Such a child starts in
# milliseconds; a spawned one imported the package anew, 0.2-0.8 s of CPU
# each, seven at once when a lab restarts on two cores. Not a plain fork of
# the launcher: that child would inherit every other pipe end the launcher
# holds at that moment, so a killed server's pipe would stay open in its
# siblings, the router would never see EOF, and would block writing to it.
# A child of the fork server holds only the pipe ends handed to it.
_ctx = multiprocessing.get_context("forkserver")
_ctx.set_forkserver_preload(["mydns_lab.lab.forkserver"])


class LabFailure(Exception):
    """The lab cannot go on (its router died); the message says why."""


class StartFailure(LabFailure):
    """A front end could not start; ``start`` raised it, and the caller
    stops what did start."""


@dataclass(slots=True)
class LabOptions:
    nservers: int = 5
    nclerks: int = 5
    dns_duration: float = 0.0
    crash: bool = False
    unreliable: bool = False
    long_reordering: bool = False
    seed: int = 0
    data_dir: Path = Path("mydns-data")
    fresh: bool = False
    port: int = 9876
    bind: str = "127.0.0.1"
    zone: str = "mydns."
    ttl: int = 60
    dashboard: bool = True
    fsync: bool = True
    crash_interval_s: tuple[float, float] = (1.0, 2.0)
    restart_delay_s: tuple[float, float] = (1.0, 2.0)
    workload: str | None = None
    dns_reads: str = "cache"
    keys_file: Path | None = None
    trusted: tuple[str, ...] = LOOPBACK_NETWORKS  # exempt from limits; may ask for Stats
    admission: AdmissionPolicy = AdmissionPolicy()
    rrl: int = 100
    name_servers: tuple[NameServer, ...] = ()  # --ns; () is ns1..ns<nclerks> at --bind
    http_port: int = 0                 # --http-port: front end i serves HTTP on it + i; 0 none
    http_bind: str | None = None
    http_cert: str | None = None
    http_key: str | None = None
    status_page: str = "local"         # --status-page: local, public or off
    etcd: EtcdOptions | None = None    # --store etcd: front ends only, records in etcd

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["data_dir"] = str(self.data_dir)
        out["keys_file"] = str(self.keys_file) if self.keys_file else None
        # Where the records were, never a password.
        out["etcd"] = ({"endpoints": list(self.etcd.endpoints), "prefix": self.etcd.prefix}
                       if self.etcd else None)
        return out


@dataclass(slots=True)
class _Child:
    name: str
    process: Any
    expected_exit: bool = False


@dataclass(slots=True)
class _Timers:
    next_crash: float = float("inf")
    restarts: dict[int, float] = field(default_factory=dict)


class Lab:
    def __init__(self, options: LabOptions, show: Callable[[LabState], None] | None = None) -> None:
        self.options = options
        on_etcd = options.etcd is not None
        self.state = LabState(0 if on_etcd else options.nservers, options.nclerks)
        self._show = show
        self._rng = random.Random(f"launcher/{options.seed}")
        self._servers = () if on_etcd else tuple(range(1, options.nservers + 1))
        # --store etcd: no router and no servers; each front end's pipe
        # carries its status reports here, and the poller watches etcd.
        self._reports: dict[Connection, FrameReader] = {}
        self._members = MemberPoller(options.etcd) if options.etcd else None
        self._children: dict[int, _Child] = {}
        self._incarnations: dict[int, int] = {}
        self._control: Connection | None = None
        self._router: Any = None
        self._timers = _Timers()
        self._lock: DataFolderLock | None = None
        self._unwritable: set[str] = set()  # files whose last write failed (said once)

    # --- life cycle -----------------------------------------------------------------

    def prepare(self) -> None:
        """Lock the data folder, check every endpoint and the keys file,
        then (``--fresh``) empty the folder and set it up. Raises LabFailure
        (nothing started, the lock released) with what to do about it."""
        opts = self.options
        try:
            self._lock = DataFolderLock.take(opts.data_dir)
        except DataFolderError as exc:
            raise LabFailure(str(exc)) from None
        try:
            forkserver.ensure_running()  # it imports while the checks below run
        except OSError as exc:
            self.release()
            raise LabFailure(f"cannot start the fork server the lab's processes come from "
                             f"({exc}); it needs a writable temporary folder, "
                             f"{tempfile.gettempdir()} now (set TMPDIR to choose)") from None
        try:
            for endpoint in self.endpoints():
                problem = endpoint_problem(endpoint)
                if problem:
                    raise LabFailure(problem)
            if opts.keys_file is not None:
                if problem := keys_file_problem(opts.keys_file):
                    raise LabFailure(problem)
                try:
                    KeyRing.load(str(opts.keys_file))
                except (OSError, KeyFileError) as exc:
                    raise LabFailure(f"cannot use --keys {opts.keys_file}: {exc}") from None
            if opts.fresh:
                self._lock.empty_folder()
            if opts.etcd is None:
                self._prepare_data_folders()
        except DataFolderError as exc:
            self.release()
            raise LabFailure(str(exc)) from None
        except BaseException:
            self.release()
            raise

    def endpoints(self) -> list[Endpoint]:
        """Every socket the lab listens on: what ``prepare`` checks."""
        settings = self._front_end_settings()
        return [endpoint for index in range(self.options.nclerks)
                for endpoint in listen_endpoints(settings, index)]

    def release(self) -> None:
        """Let go of the data folder (``stop`` does; the process's end would)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def start(self) -> None:
        if self._members is not None:
            self._start_on_etcd()
            return
        opts = self.options
        router_ends: dict[int, Connection] = {}
        child_ends: dict[int, Connection] = {}
        for address in (*self._servers, *self._clerk_addresses()):
            router_ends[address], child_ends[address] = _ctx.Pipe()
        self._control, router_control = _ctx.Pipe()
        self._router = _ctx.Process(target=run_router, name="mydns-router", daemon=False,
                                    args=(router_ends, router_control, opts.seed,
                                          frozenset(self._servers)))
        self._router.start()
        router_control.close()
        for end in router_ends.values():
            end.close()
        if opts.unreliable:
            self._control.send(("faults", LinkFaults.classic_unreliable(opts.long_reordering)))
        direct = {} if opts.unreliable else self._direct_pipes()
        for node in self._servers:
            self._spawn_server(node, child_ends[node], direct.get(node))
        started = {self._spawn_clerk(index, address, child_ends[address], direct.get(address)):
                   index for index, address in enumerate(self._clerk_addresses())}
        self._await_front_ends(started)
        if opts.crash:
            self._timers.next_crash = time.monotonic() + self._rng.uniform(*opts.crash_interval_s)
        self.state.log(f"started: {self.serving_summary()}")

    def _start_on_etcd(self) -> None:
        """``--store etcd``: the front ends alone, each with a pipe for its
        status reports, and the poller that shows etcd's members."""
        assert self._members is not None and self.options.etcd is not None
        started = {}
        for index, address in enumerate(self._clerk_addresses()):
            ours, theirs = _ctx.Pipe()
            self._reports[ours] = FrameReader(ours)
            started[self._spawn_clerk(index, address, theirs)] = index
        self._members.start()
        self._await_front_ends(started)
        self.state.log(f"started: {self.serving_summary()}")

    def serving_summary(self) -> str:
        """Where the front ends answer and where the records live: the line
        an operator needs to point dig, put.py or a browser at the lab."""
        opts = self.options
        last = opts.nclerks - 1
        where = f"DNS and JSON on UDP and TCP {opts.bind}:{opts.port}..{opts.port + last}"
        if opts.http_port:
            http_bind = opts.http_bind or opts.bind
            where += f", HTTP on {http_bind}:{opts.http_port}..{opts.http_port + last}"
        store = (f"records in etcd at {', '.join(opts.etcd.endpoints)}" if opts.etcd
                 else f"{opts.nservers} Raft servers, data in {opts.data_dir}")
        return f"{opts.nclerks} front ends, {where}; {store}"

    def _inputs(self) -> list[Any]:
        """What the loop waits on besides the children: the router's control
        pipe and the router itself, or (on etcd) the report pipes."""
        if self._router is None:
            return list(self._reports)
        return [self._control, self._router.sentinel]

    def _drain_reports(self, conn: Connection) -> None:
        try:
            for report in receive(self._reports[conn], self.state.log):
                self.state.on_report(report)
        except (EOFError, OSError):
            self._reports.pop(conn).close()  # that front end is gone: its exit says so

    def run(self, until: Callable[[], bool] | None = None, refresh_s: float = 0.25,
            duration_s: float | None = None) -> None:
        """Serve until ``duration_s`` (default: --dnsDuration, 0 meaning
        forever) passes, ``until()`` holds, or Ctrl-C."""
        duration = self.options.dns_duration if duration_s is None else duration_s
        deadline = time.monotonic() + duration if duration > 0 else float("inf")
        next_show = 0.0
        while time.monotonic() < deadline and not (until and until()):
            sentinels = {c.process.sentinel: a for a, c in self._children.items()}
            timeout = min(refresh_s, max(0.0, deadline - time.monotonic()))
            for ready in wait([*self._inputs(), *sentinels], timeout):
                if ready is self._control:
                    try:
                        self._drain_control()
                    except (EOFError, OSError):  # the router is gone: its sentinel may come later
                        raise LabFailure(self._router_failure()) from None
                elif ready in self._reports:
                    self._drain_reports(ready)
                elif self._router is not None and ready == self._router.sentinel:
                    raise LabFailure(self._router_failure())
                else:
                    self._child_exited(sentinels[ready])
            self._run_crash_controller()
            if self._members is not None:
                self.state.etcd_members = self._members.members
            now = time.monotonic()
            if now >= next_show:
                next_show = now + refresh_s
                self._write_status_file()
                if self._show is not None:
                    self._show(self.state)

    def stop(self) -> dict[str, Any]:
        """Stop every child within STOP_GRACE_S; return the final statistics.

        Clerks go first, so their last counters still reach us through the
        router; then servers; then the router itself.
        """
        deadline = time.monotonic() + STOP_GRACE_S - 0.3
        self._freeze_router_stats(time.monotonic() + 0.5)
        clerks = [c for a, c in self._children.items() if a not in self.state.servers]
        servers = [c for a, c in self._children.items() if a in self.state.servers]
        for group in (clerks, servers):
            for child in group:
                child.expected_exit = True
                _signal(child.process, signal.SIGTERM)
            for child in group:
                child.process.join(max(0.0, min(deadline, time.monotonic() + 1.0)
                                       - time.monotonic()))
        self._drain_control_until(min(deadline, time.monotonic() + 0.2))
        for conn in list(self._reports):
            self._drain_reports(conn)
        if self._members is not None:
            self._members.stop()
        if self._control is not None:
            try:
                self._control.send(("stop",))
            except OSError:
                pass
        if self._router is not None:
            self._router.join(max(0.1, deadline - time.monotonic()))
        for process in [c.process for c in self._children.values()] + [self._router]:
            if process is not None and process.is_alive():
                _signal(process, signal.SIGKILL)
                process.join(0.5)
        stats = self.state.final_stats(self.options.as_json())
        self._write_quietly(self.options.data_dir / "last-run.json",
                            json.dumps(stats, indent=2) + "\n")
        self.release()
        return stats

    def _write_quietly(self, path: Path, text: str) -> None:
        """Replace ``path`` with ``text`` atomically; a failure (a full
        disk) is one line in the event log, never the end of the lab: the
        file is for operators, the service does not depend on it."""
        tmp = path.with_suffix(".tmp")
        try:
            _write_private(tmp, text)
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if path.name not in self._unwritable:
                self._unwritable.add(path.name)
                self.state.log(f"launcher: cannot write {path} ({exc.strerror or exc}); "
                               "free space there, the lab goes on without it")
        else:
            self._unwritable.discard(path.name)

    def _write_status_file(self) -> None:
        """``<data-dir>/status.json``: who is up and who leads, each server's
        term, commit and applied index, the recent leader changes and the
        network's packet counts, for operators, the front ends' status page
        and metrics, and benchmarks (replaced atomically, a few times a
        second)."""
        servers = {}
        for node, view in self.state.servers.items():
            status = view.status
            fresh = status is not None and view.up and status.pid == view.pid
            role = status.role if fresh and status else ("starting" if view.up else "down")
            servers[str(node)] = {"up": view.up, "pid": view.pid, "role": role,
                                  "term": status.term if status else 0,
                                  "commit": status.commit if status else 0,
                                  "applied": status.applied if status else 0,
                                  "disk_full": status.disk_full if fresh and status else ""}
        changes = self.state.leader_changes
        self._write_quietly(self.options.data_dir / "status.json", json.dumps(
            {"leader": self.state.leader, "term": self.state.leader_term, "servers": servers,
             "leader_changes": len(changes),
             "recent_leader_changes": [{"at_s": round(at, 3), "term": term, "leader": node}
                                       for at, term, node in changes[-STATUS_RECENT_CHANGES:]],
             "packets": self.state.packets(), "written_at": time.time(),
             **({"etcd_members": [asdict(m) for m in self.state.etcd_members]}
                if self._members is not None else {})}))

    def _freeze_router_stats(self, until: float) -> None:
        """Take the network's counters as they stand before anything stops:
        messages caught in flight by the shutdown are not losses."""
        if self._control is None or self._router is None or not self._router.is_alive():
            return
        try:
            self._control.send(("report",))
        except OSError:
            return
        self._drain_control_until(until, done=lambda: self.state.router_final)

    def _drain_control_until(self, until: float, done: Callable[[], bool] = lambda: False) -> None:
        """Take in what the router still forwards, until ``until`` or ``done()``."""
        if self._control is None:
            return
        try:
            while not done() and self._control.poll(max(0.0, until - time.monotonic())):
                self._drain_control()
        except (EOFError, OSError):
            pass

    # --- fault injection -----------------------------------------------------------------

    def kill_server(self, node: int) -> None:
        """SIGKILL a server now; it stays down until restart_server."""
        child = self._children.get(node)
        if child is None or not child.process.is_alive():
            return
        child.expected_exit = True
        _signal(child.process, signal.SIGKILL)
        child.process.join(1.0)
        self.state.servers[node].up = False
        self.state.crashes_injected += 1
        self.state.log(f"s{node} killed (SIGKILL)")

    def restart_server(self, node: int) -> None:
        router_end, child_end = _ctx.Pipe()
        assert self._control is not None and self._router is not None
        self._control.send(("attach", node))
        reduction.send_handle(self._control, router_end.fileno(), self._router.pid)
        router_end.close()
        self._spawn_server(node, child_end)
        self.state.servers[node].restarts += 1
        self.state.log(f"s{node} restarted")

    # --- internals ----------------------------------------------------------------------

    def _prepare_data_folders(self) -> None:
        """Know a new cluster from an existing one, and mark servers whose
        folder was lost so they catch up before they vote again."""
        opts = self.options
        marker = opts.data_dir / CLUSTER_FILE
        if not marker.exists():
            _write_private(marker, json.dumps({"servers": opts.nservers}) + "\n")
            return
        try:
            recorded = json.loads(marker.read_text())["servers"]
        except (ValueError, KeyError, TypeError):
            raise LabFailure(f"{marker} is damaged; restore it, or start empty with --fresh")
        if recorded != opts.nservers:
            raise LabFailure(f"{opts.data_dir} holds a cluster of {recorded} servers; run with "
                             f"--nservers {recorded}, or start empty with --fresh")
        lost = [n for n in self._servers if not _holds_data(server_folder(opts.data_dir, n))]
        intact = opts.nservers - len(lost)
        if intact < majority(opts.nservers):
            raise LabFailure(f"only {intact} of {opts.nservers} server folders in "
                             f"{opts.data_dir} hold data; a majority is needed to recover the "
                             "rest: restore them, or start empty with --fresh")
        for node in lost:
            mark_recovering(server_folder(opts.data_dir, node))
            self.state.log(f"s{node}: data folder empty; it will catch up before it votes")

    def _direct_pipes(self) -> dict[int, dict[int, Connection]]:
        """A pipe between every two servers and between every front end and
        every server, by address and peer: on a reliable network messages
        take them and skip the router. A server restarted later gets none;
        its peers drop theirs when it dies and reach it by the router."""
        pipes: dict[int, dict[int, Connection]] = {}
        servers = list(self._servers)
        for i, server in enumerate(servers):
            for peer in (*servers[i + 1:], *self._clerk_addresses()):
                ours, theirs = _ctx.Pipe()
                pipes.setdefault(server, {})[peer] = ours
                pipes.setdefault(peer, {})[server] = theirs
        return pipes

    def _clerk_addresses(self) -> list[int]:
        return [CLERK_ADDRESS_BASE + 1 + i for i in range(self.options.nclerks)]

    def _spawn_server(self, node: int, conn: Connection,
                      direct: dict[int, Connection] | None = None) -> None:
        """Start server ``node`` on its router pipe ``conn`` and its
        ``direct`` pipes (the launcher's copies are closed once it has them)."""
        opts = self.options
        settings = ServerSettings(self._servers, opts.data_dir, opts.seed, fsync=opts.fsync)
        incarnation = self._incarnations.get(node, 0) + 1
        self._incarnations[node] = incarnation
        process = _ctx.Process(target=run_server, name=f"mydns-server-{node}",
                               args=(node, settings, conn, incarnation, direct))
        process.start()
        _close_all(conn, direct)
        self._children[node] = _Child(f"s{node}", process)
        view = self.state.servers[node]
        view.up, view.pid = True, process.pid or 0

    def _front_end_settings(self) -> FrontEndSettings:
        opts = self.options
        return FrontEndSettings(self._servers, opts.port, opts.bind, opts.zone, opts.ttl,
                                opts.dns_reads, str(opts.keys_file) if opts.keys_file else None,
                                opts.trusted, opts.admission, opts.rrl,
                                name_servers=opts.name_servers or default_name_servers(
                                    opts.bind, opts.nclerks),
                                http_port=opts.http_port, http_bind=opts.http_bind,
                                http_cert=opts.http_cert, http_key=opts.http_key,
                                status_file=str(opts.data_dir / "status.json"),
                                status_page=opts.status_page, etcd=opts.etcd)

    def _spawn_clerk(self, index: int, address: int, conn: Connection,
                     direct: dict[int, Connection] | None = None) -> Connection:
        """Start clerk ``index`` on ``conn`` (the router's pipe, or the
        launcher's report pipe on etcd) and its ``direct`` pipes to the
        servers; returns the read end of its start pipe."""
        started, started_child = _ctx.Pipe(duplex=False)
        process = _ctx.Process(target=run_clerk, name=f"mydns-clerk-{index}",
                               args=(index, address, self._front_end_settings(), conn,
                                     started_child, direct))
        process.start()
        _close_all(conn, direct)
        started_child.close()  # so the clerk's exit reads as EOF here
        self._children[address] = _Child(f"clerk{index}", process)
        return started

    def _await_front_ends(self, pending: dict[Connection, int]) -> None:
        """Wait for each front end's start message (``pending``: start pipe
        -> index), taking status reports meanwhile. Raises StartFailure for
        the first that failed, exited without a word, or stayed silent for
        FRONT_END_START_S."""
        deadline = time.monotonic() + FRONT_END_START_S
        try:
            while pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    silent = ", ".join(str(i) for i in sorted(pending.values()))
                    raise StartFailure(f"front end {silent} did not start listening within "
                                       f"{FRONT_END_START_S:g} s; the host may be overloaded")
                for ready in wait([*self._inputs(), *pending], left):
                    if ready in self._reports:
                        self._drain_reports(ready)
                        continue
                    if ready is not self._control:
                        self._front_end_started(pending.pop(ready), ready)
                        continue
                    try:
                        self._drain_control()
                    except (EOFError, OSError):
                        raise StartFailure(self._router_failure()) from None
        finally:
            for conn in pending:
                conn.close()

    def _front_end_started(self, index: int, conn: Connection) -> None:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            message = None
        conn.close()
        match message:
            case FrontEndListening():
                return
            case FrontEndFailed(endpoint=Endpoint() as endpoint, errno=error, reason=reason):
                raise StartFailure(f"front end {index}: " + bind_problem(endpoint, error, reason))
            case FrontEndFailed(reason=reason):
                raise StartFailure(f"front end {index} could not start: {reason}")
        process = self._children[self._clerk_addresses()[index]].process
        process.join(1.0)
        raise StartFailure(f"front end {index} (pid {process.pid}) exited with code "
                           f"{process.exitcode} before it listened")

    def _drain_control(self) -> None:
        assert self._control is not None
        while self._control.poll(0):
            message = self._control.recv()
            if message[0] == "stats":
                self.state.on_router_stats(message[1])
            elif message[0] == "final-stats":
                self.state.on_router_stats(message[1], final=True)
            elif message[0] == "error":
                self.state.log(f"router failed: {message[1].strip().splitlines()[-1]}")
                self.state.unexpected_exits.append("router: " + message[1])
            elif message[0] == "status":
                try:
                    self.state.on_report(decode(message[1]))
                except DecodeError as exc:
                    self.state.log(f"unreadable status report: {exc}")

    def _router_failure(self) -> str:
        try:
            self._drain_control()
        except (EOFError, OSError):
            pass
        self._router.join(1.0)
        reason = (f"the router (pid {self._router.pid}) exited with code "
                  f"{self._router.exitcode}; every process reports and restarts through it, "
                  "so the lab stops")
        self.state.unexpected_exits.append(reason)
        return reason

    def _child_exited(self, address: int) -> None:
        child = self._children[address]
        child.process.join(0)
        if child.expected_exit:
            return
        child.expected_exit = True
        reason = f"{child.name} (pid {child.process.pid}) exited unexpectedly " \
                 f"with code {child.process.exitcode}"
        self.state.unexpected_exits.append(reason)
        self.state.log(reason)
        if address in self.state.servers:
            self.state.servers[address].up = False
            self._timers.restarts[address] = time.monotonic() + 1.0

    def _run_crash_controller(self) -> None:
        now = time.monotonic()
        for node, when in list(self._timers.restarts.items()):
            if now >= when:
                del self._timers.restarts[node]
                self.restart_server(node)
        if now < self._timers.next_crash:
            return
        opts = self.options
        self._timers.next_crash = now + self._rng.uniform(*opts.crash_interval_s)
        up = [n for n in self._servers if self.state.servers[n].up]
        # Never leave fewer than a majority alive.
        if len(up) - 1 < majority(opts.nservers):
            return
        victim = self._rng.choice(up)
        self.kill_server(victim)
        self._timers.restarts[victim] = now + self._rng.uniform(*opts.restart_delay_s)


def keys_file_problem(path: Path) -> str:
    """Why the keys file must not be used as it is ("" if it may): its
    secrets sign updates, so group or others may neither read nor change it.
    A file that cannot be read is left to ``KeyRing.load`` to explain."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return ""
    if not mode & 0o066:
        return ""
    access = "readable" if mode & 0o044 else "writable"
    return (f"keys file {path} is {access} by group or others (mode {mode:04o}), and its "
            f"secrets sign updates; make it private: chmod 600 {path}")


def _write_private(path: Path, text: str) -> None:
    """``path`` holding ``text``, readable by its owner alone (FILE_MODE)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "w") as out:
        os.fchmod(fd, FILE_MODE)  # a file that was there keeps its mode otherwise
        out.write(text)


def _holds_data(folder: Path) -> bool:
    """:func:`holds_saved_state`, with a damaged or unreadable folder
    turned into a LabFailure (its message says what to do) instead of a
    traceback."""
    try:
        return holds_saved_state(folder)
    except CorruptStorageError as exc:
        raise LabFailure(str(exc)) from None
    except OSError as exc:
        raise LabFailure(f"cannot read server folder {folder}: {exc}; check its permissions, "
                         "or start empty with --fresh") from None


def _close_all(conn: Connection, direct: dict[int, Connection] | None) -> None:
    """Close the launcher's copies of pipes a child process now holds."""
    conn.close()
    for pipe in (direct or {}).values():
        pipe.close()


def _signal(process: Any, signum: int) -> None:
    if process.pid is not None and process.is_alive():
        try:
            os.kill(process.pid, signum)
        except ProcessLookupError:
            pass


def print_final_table(stats: dict[str, Any], out: Any = sys.stdout) -> None:
    """The final statistics as a plain two-column table: on our own store
    the network and Raft figures, on etcd what its members last said."""
    on_etcd = bool(stats["options"].get("etcd"))
    rows: list[tuple[str, Any]] = [("duration", f"{stats['duration_s']} s")]
    if not on_etcd:
        rows += [
            ("total packets", stats["total_packets"]),
            ("packets delivered / dropped", f"{stats['packets']['delivered']} / "
                                            f"{stats['packets']['dropped']}")]
    rows += [
        ("puts (ok / failed)", f"{stats['puts']} / {stats['puts_failed']}"),
        ("queries (ok / failed)", f"{stats['queries']} / {stats['queries_failed']}"),
        ("client loss rate", f"{stats['client_loss_rate']:.2%}"),
        ("latency p50 / p99", f"{stats['latency_ms_p50']} / {stats['latency_ms_p99']} ms")]
    if on_etcd:
        members = stats.get("etcd_members", [])
        leaders = [m for m in members if m["leader"]]
        rows += [
            ("etcd members up", f"{sum(m['up'] for m in members)} / {len(members)}"),
            ("etcd leader (term)", f"{leaders[0]['endpoint']} ({leaders[0]['term']})"
                                   if leaders else "none seen"),
            ("etcd revision", max((m["revision"] for m in members), default=0))]
    else:
        rows += [
            ("raft RPCs", stats["rpcs"]),
            ("network loss rate", f"{stats['network_loss_rate']:.2%}"),
            ("max term", stats["max_term"]),
            ("leader changes", stats["leader_changes"]),
            ("crashes injected", stats["crashes_injected"])]
    rows.append(("unexpected exits", len(stats["unexpected_exits"])))
    width = max(len(r[0]) for r in rows)
    print("final statistics", file=out)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}", file=out)
    for reason in stats["unexpected_exits"]:
        print(f"  ! {reason}", file=out)
