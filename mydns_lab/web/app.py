"""A front end's HTTP service: its routes on a :mod:`~mydns_lab.web.http` server.

Every route reads what the front end already has, passed in as a
:class:`WebContext`: its copy of the records, its trusted networks, and the
JSON protocol's handler, through which every update goes, so that an update
over HTTP meets exactly the rules a JSON Put meets (ownership, ``Seq``,
admission). ``/healthz`` says the process serves; ``/readyz`` says it has
a complete, current copy of the records (its watch on the leader answered
within READY_WITHIN_S, which also says the cluster has a leader), else 503.
"""

from __future__ import annotations

import json
import ssl
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Awaitable, Callable

from ..admission import TrustedSources
from ..net.recordcopy import RecordCache
from . import dyndns, metrics, status
from .http import App, HttpServer, Request, Response
from .metrics import FrontEndMetrics

CLUSTER_FILE_MAX_AGE_S = 0.25  # how long a read of the launcher's status file is reused
READY_WITHIN_S = 3.0
"""How recently the watch on the leader must have answered for /readyz
(the leader answers a watch within a fraction of a second, changes or not)."""

JsonHandler = Callable[[bytes, "str | None"], Awaitable["bytes | None"]]


class ClusterFile:
    """The launcher's ``status.json`` (see ``Lab._write_status_file``): the
    servers' roles, terms, commit and applied indexes, leader changes and
    packet counts, as a front end can see them. Read at most every
    CLUSTER_FILE_MAX_AGE_S; None when there is none (no launcher, or not
    written yet) or it cannot be read."""

    def __init__(self, path: str | None) -> None:
        self._path = path
        self._read_at = float("-inf")
        self._last: dict[str, Any] | None = None

    def read(self) -> dict[str, Any] | None:
        now = time.monotonic()
        if self._path is None or now - self._read_at < CLUSTER_FILE_MAX_AGE_S:
            return self._last
        self._read_at = now
        try:
            with open(self._path, encoding="utf-8") as f:
                found = json.load(f)
            self._last = found if isinstance(found, dict) else None
        except (OSError, ValueError):
            self._last = None
        return self._last


@dataclass(frozen=True)
class WebContext:
    """What the HTTP routes of front end ``index`` read and call."""

    index: int
    zone: str
    records: RecordCache
    trusted: TrustedSources
    handle_json: JsonHandler   # JsonFrontEnd.handle: request bytes and source in, reply out
                               # (service/jsonfront.py counts its Puts under dyndns2 in /metrics)
    cluster: ClusterFile = field(default_factory=lambda: ClusterFile(None))
    status_page: str = "local"  # --status-page: who sees the names on / (status.PageAccess)
    operation_totals: Callable[[], tuple[int, int]] | None = None  # (puts, queries) OK so far
    metrics: FrontEndMetrics = field(default_factory=FrontEndMetrics)  # for /metrics

    async def json_request(self, request: dict[str, Any], source: str | None) -> dict[str, Any]:
        """One JSON-protocol request through the front end's own handler."""
        reply = await self.handle_json(json.dumps(request).encode(), source)
        return json.loads(reply) if reply is not None else {}

    def ready(self) -> tuple[bool, str]:
        """Whether this front end answers from a complete, current copy, and why not."""
        if not self.records.loaded:
            return False, "the copy of the records is still loading"
        silent_s = time.monotonic() - self.records.heard_at
        if silent_s > READY_WITHIN_S:
            return False, (f"no word from the cluster's leader for {silent_s:.1f} s "
                           "(no leader, or this front end is cut off)")
        return True, "ready"


async def healthz(request: Request) -> Response:
    return Response.text("ok\n")


async def readyz(context: WebContext, request: Request) -> Response:
    ready, why = context.ready()
    return Response.text(why + "\n", status=200 if ready else 503)


def build_app(context: WebContext) -> App:
    """Every route of the front end's HTTP service; each module of this
    package that serves some adds them with its ``add_routes(app, context)``."""
    app = App()
    app.add_get("/healthz", healthz)
    app.add_get("/readyz", partial(readyz, context))
    status.add_routes(app, context)
    metrics.add_routes(app, context)
    dyndns.add_routes(app, context)
    return app


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """The server side of HTTPS from a certificate chain and its key
    (``--http-cert``, ``--http-key``); raises OSError or ssl.SSLError."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context


async def start_site(context: WebContext, host: str, port: int,
                     tls: ssl.SSLContext | None = None) -> HttpServer:
    """Serve the app on ``host:port``; raises OSError when it cannot bind
    (nothing stays bound). Stop it with ``await server.stop()``."""
    server = HttpServer(build_app(context))
    await server.start(host, port, tls)
    return server
