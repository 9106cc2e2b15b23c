"""A front-end process: binds its sockets, serves until told to stop, and
tells the launcher how it went."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from dataclasses import dataclass
from functools import partial
from multiprocessing.connection import Connection
from typing import Callable

from ..admission import Admission, TrustedSources
from ..dns.tsig import KeyRing
from ..net.cluster_client import ClusterClient, RecordStore
from ..net.endpoints import Endpoint, FrontEndFailed, FrontEndListening, Proto
from ..net.recordcopy import RecordCache, expire_records, watch_records
from ..net.procs import die_with_parent, set_role_title
from ..net.transport import LAUNCHER
from ..net.udp import UdpServer
from ..reports import ClerkStatus
from ..web.app import ClusterFile, WebContext, start_site, tls_context
from ..web.http import HttpServer
from ..web.metrics import FrontEndMetrics, UpdatePath
from .dnsfront import DnsService, UdpFrontEnd, serve_tcp_client
from .jsonfront import JsonFrontEnd
from .settings import FrontEndCounters, FrontEndSettings

STATUS_INTERVAL_S = 0.25


def admission_for(settings: FrontEndSettings, cache: RecordCache, keyring: KeyRing) -> Admission:
    """The JSON Puts' gate for this front end's flags and keys file."""
    def reserved(name: str) -> str | None:
        key = keyring.key_granting(name, settings.zone)
        return key.name if key else None
    return Admission(settings.admission, TrustedSources(settings.trusted), reserved,
                     lambda name: cache.lookup(name) is not None,
                     frozenset(server.name for server in settings.name_servers))


def _status(index: int, client: RecordStore, counters: FrontEndCounters) -> ClerkStatus:
    return ClerkStatus(index, os.getpid(), counters.puts_ok, counters.puts_failed,
                       counters.queries_ok, counters.queries_failed, client.counters.retries,
                       counters.requests_received, tuple(counters.latencies_ms[-64:]))


async def _report_status(index: int, client: RecordStore, counters: FrontEndCounters) -> None:
    while not client.closed.is_set():
        client.send_status(LAUNCHER, _status(index, client, counters))
        try:
            await asyncio.wait_for(client.closed.wait(), STATUS_INTERVAL_S)
        except asyncio.TimeoutError:
            pass


# --- start-up: what a front end listens on, and how it tells the launcher ---------------

def listen_endpoints(settings: FrontEndSettings, index: int) -> tuple[Endpoint, ...]:
    """Every socket front end ``index`` binds, in the order it binds them:
    DNS and JSON on UDP and TCP, then HTTP when ``http_port`` is set."""
    port = settings.port + index
    dns = Endpoint(Proto.UDP, settings.bind, port), Endpoint(Proto.TCP, settings.bind, port)
    if not settings.http_port:
        return dns
    return (*dns, Endpoint(Proto.TCP, settings.http_bind or settings.bind,
                           settings.http_port + index, "--http-port"))


class _BindError(Exception):
    def __init__(self, endpoint: Endpoint, error: OSError) -> None:
        super().__init__(f"{endpoint}: {error.strerror or error}")
        self.endpoint, self.error = endpoint, error


@dataclass(slots=True)
class _Listening:
    """What a front end has bound; :meth:`close` lets go of all of it."""

    udp: UdpServer
    tcp: asyncio.Server
    http: HttpServer | None = None

    async def close(self) -> None:
        self.udp.close()
        self.tcp.close()
        if self.http is not None:
            await self.http.stop()


async def _listen(settings: FrontEndSettings, index: int, json_front: JsonFrontEnd,
                  dns: DnsService, web_context: WebContext) -> _Listening:
    """Bind the UDP, TCP and HTTP endpoints; raises _BindError naming the
    one that failed (nothing stays bound)."""
    udp, tcp, *http = listen_endpoints(settings, index)
    # A certificate that does not load raises here, before anything is bound.
    tls = (tls_context(settings.http_cert, settings.http_key)
           if http and settings.http_cert and settings.http_key else None)
    front = UdpFrontEnd(json_front, dns)
    try:
        front.server = udp_server = UdpServer.bind(udp.address, udp.port, front.datagrams_received)
    except OSError as exc:
        raise _BindError(udp, exc) from None
    try:
        server = await asyncio.start_server(
            lambda r, w: serve_tcp_client(dns, r, w), tcp.address, tcp.port)
    except OSError as exc:
        udp_server.close()
        raise _BindError(tcp, exc) from None
    listening = _Listening(udp_server, server)
    if http:
        try:
            listening.http = await start_site(web_context, http[0].address, http[0].port, tls)
        except OSError as exc:
            await listening.close()
            raise _BindError(http[0], exc) from None
    return listening


async def _serve(index: int, address: int, settings: FrontEndSettings,
                 conn: Connection | None, started: Connection | Callable[[object], None],
                 direct: dict[int, Connection] | None = None) -> bool:
    """Serve until SIGTERM or the router goes; False when the front end
    could not start (after telling the launcher on ``started`` why)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    if not isinstance(started, Connection):  # alone (mydns frontend): Ctrl-C stops it too
        loop.add_signal_handler(signal.SIGINT, stop.set)
    counters = FrontEndCounters()
    cache = RecordCache()
    try:
        client = _store(settings, conn, address, direct)
        keyring = KeyRing.load(settings.keys_file) if settings.keys_file else None
        cluster = ClusterFile(settings.status_file)
        metrics = FrontEndMetrics(cache, cluster.read, counters)
        json_front = JsonFrontEnd(client, counters, settings.trusted,
                                  admission=admission_for(settings, cache, keyring or KeyRing()),
                                  records=cache, zone=settings.zone, metrics=metrics)
        dns = DnsService(client, settings, cache, counters, keyring, metrics)
        web_context = WebContext(index, settings.zone, cache, TrustedSources(settings.trusted),
                                 # every Put over HTTP is a dyndns2 update, counted as one
                                 partial(json_front.handle, path=UpdatePath.DYNDNS2), cluster,
                                 metrics=metrics,
                                 status_page=settings.status_page,
                                 operation_totals=lambda: (counters.puts_ok, counters.queries_ok))
        listening = await _listen(settings, index, json_front, dns, web_context)
        metrics.count_udp_drops(listening.udp)
    except _BindError as exc:
        _tell(started, FrontEndFailed(index, str(exc), exc.endpoint, exc.error.errno))
        return False
    except Exception as exc:  # a zone or keys file the launcher did not refuse: say so, not die
        _tell(started, FrontEndFailed(index, f"{type(exc).__name__}: {exc}"))
        return False
    _tell(started, FrontEndListening(index))
    background = [asyncio.ensure_future(_report_status(index, client, counters)),
                  asyncio.ensure_future(watch_records(client, cache))]
    if settings.admission.expire_s > 0:
        background.append(asyncio.ensure_future(
            expire_records(client, cache, settings.admission.expire_s)))
    try:
        await asyncio.wait([asyncio.ensure_future(stop.wait()),
                            asyncio.ensure_future(client.closed.wait())],
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in background:
            task.cancel()
        if not client.closed.is_set():
            # The final counters first (the launcher waits a few seconds only),
            # so its table counts every operation.
            client.send_status(LAUNCHER, _status(index, client, counters))
            client.flush_now()
        await listening.close()
        if settings.etcd is not None:
            await _close_etcd_store(client)
    return True


def _store(settings: FrontEndSettings, conn: Connection | None, address: int,
           direct: dict[int, Connection] | None = None) -> RecordStore:
    """The records' store: etcd (``--store etcd``; then ``conn`` carries
    status reports to the launcher, if any), or our Raft servers over the
    router pipe ``conn`` and the pipes straight to them (``direct``)."""
    if settings.etcd is not None:
        # Imported here: the etcd store's client, aiohttp, costs a process
        # about 23 MB, which a front end of the embedded store never pays.
        from ..etcd.store import EtcdStore
        return EtcdStore(settings.etcd, report=conn)
    assert conn is not None, "the embedded store is reached through the lab's router"
    return ClusterClient(conn, address, settings.servers, direct=direct)


async def _close_etcd_store(client: RecordStore) -> None:
    """Close the store :func:`_store` built for ``--store etcd``."""
    from ..etcd.store import EtcdStore  # loaded already, by _store
    assert isinstance(client, EtcdStore)
    await client.close()


def _tell(started: Connection | Callable[[object], None],
          message: FrontEndListening | FrontEndFailed) -> None:
    """The one message of the start pipe (or, for a front end alone, of the
    callback it gave); a launcher gone already is no error."""
    if not isinstance(started, Connection):
        started(message)
        return
    try:
        started.send(message)
        started.close()
    except OSError:
        pass


def serve_alone(settings: FrontEndSettings, told: Callable[[object], None]) -> bool:
    """Run one front end in this process on ``settings.port`` (``mydns
    frontend``) until SIGTERM or Ctrl-C; ``told`` gets its
    FrontEndListening or FrontEndFailed. False when it could not start."""
    return asyncio.run(_serve(0, 0, settings, None, told))


def run_clerk(index: int, address: int, settings: FrontEndSettings, conn: Connection,
              started: Connection, direct: dict[int, Connection] | None = None) -> None:
    """Process entry point of clerk ``index`` (front end on port + index),
    reaching the servers through the router on ``conn`` or on ``direct``.
    It sends one message on ``started``, :class:`FrontEndListening` once
    every endpoint is bound, or :class:`FrontEndFailed`, then exits 1."""
    die_with_parent()
    set_role_title(f"frontend c{index}")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not asyncio.run(_serve(index, address, settings, conn, started, direct)):
        sys.exit(1)
