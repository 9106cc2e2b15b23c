"""The front ends' HTTP/1.1 server: asyncio streams, with h11 reading and
writing every message.

A front end serves a handful of small routes (dyndns2 updates, the status
page, ``/metrics``, health checks), so this is a small server rather than
a framework: h11 parses and frames (request line, headers, chunked or
sized bodies, keep-alive, HTTP/1.0), and this module adds the routing, the
limits and the lifecycle. aiohttp's server did the same for about 23 MB a
process more (docs/architecture.md).

Who calls what: a module that serves routes registers them on an
:class:`App` (``add_get``, ``add_post``, ``add_route``), and may ask for a
background task that runs while the server does (``run_while_serving``).
:class:`HttpServer` serves one App: ``await start(host, port, tls)`` binds
(or raises OSError with nothing bound), ``await stop()`` lets go. A handler
gets a :class:`Request` whose body is already read, within the route's
limit, and returns a :class:`Response`; an exception it raises becomes a
500, and the connection and the server carry on.

What a client on the LAN cannot do (:class:`Limits`): hold more than
``max_connections`` connections at once (more are closed as they come),
keep one open more than ``idle_timeout_s`` without sending a whole request,
send a head over ``max_head_bytes`` or with over ``max_header_lines`` lines
(431), or a body over its route's limit (413); a request h11 cannot read
is answered 400 and the connection closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import http
import ssl
import sys
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable, Iterator, Mapping
from urllib.parse import parse_qsl, unquote, urlsplit

import h11

HTTP_SHUTDOWN_S = 1.0
"""How long a stopping server lets requests in flight finish."""
MAX_BODY_BYTES = 16 * 1024
"""A route's request body limit unless it names its own (the front ends'
routes are GETs: a body is never needed)."""
READ_BYTES = 64 * 1024
LINGER_S = 2.0
LINGER_BYTES = 1024 * 1024
"""After an error answer the client may still be sending (a body over the
limit, say): closing with its bytes unread would reset the connection, and
the reset can destroy the answer before the client reads it. So the server
stops writing, then reads and drops up to LINGER_BYTES for up to LINGER_S
before it closes."""


@dataclass(frozen=True, slots=True)
class Limits:
    """What one client may cost the server; tests pass smaller ones."""

    max_connections: int = 256
    idle_timeout_s: float = 60.0     # for a whole request to arrive, and for each write
    max_head_bytes: int = 8 * 1024   # request line and headers
    max_header_lines: int = 64
    shutdown_s: float = HTTP_SHUTDOWN_S


_MISSING = object()


class MultiDict(Mapping[str, str]):
    """Name-value pairs where a name may repeat (a query string, headers):
    as a mapping, a name's first value; :meth:`getall` gives every one."""

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        self._pairs = [(self._key(name), value) for name, value in pairs]
        self._first: dict[str, str] = {}
        for name, value in self._pairs:
            self._first.setdefault(name, value)

    def _key(self, name: str) -> str:
        return name

    def __getitem__(self, name: str) -> str:
        return self._first[self._key(name)]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._key(name) in self._first

    def __iter__(self) -> Iterator[str]:
        return iter(self._first)

    def __len__(self) -> int:
        return len(self._first)

    def getone(self, name: str) -> str:
        """The first value of ``name``; raises KeyError when there is none."""
        return self[name]

    def getall(self, name: str, default: Any = _MISSING) -> list[str]:
        """Every value of ``name``, in order; ``default`` when there is none
        (without one, KeyError)."""
        key = self._key(name)
        found = [value for n, value in self._pairs if n == key]
        if not found:
            if default is _MISSING:
                raise KeyError(name)
            return default
        return found

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._pairs!r})"


class Headers(MultiDict):
    """Request headers: names compare without case."""

    def _key(self, name: str) -> str:
        return name.lower()


@dataclass(frozen=True, slots=True)
class Request:
    """One request as a handler sees it. ``remote`` is the socket's peer
    address (no header a client sets is read for it); ``path`` is
    percent-decoded; header values are decoded as Latin-1, as HTTP has them."""

    method: str
    path: str
    query: MultiDict
    headers: Headers
    remote: str | None
    body: bytes = b""
    http_version: str = "1.1"


@dataclass(slots=True)
class Response:
    """What a handler answers. ``headers`` must not hold Content-Type or
    Content-Length: the server writes them from ``content_type`` and
    ``body``."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/octet-stream"
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def text(cls, text: str, status: int = 200, content_type: str = "text/plain",
             headers: Mapping[str, str] | None = None) -> Response:
        """``text`` in UTF-8, said so in the Content-Type."""
        return cls(status, text.encode(), f"{content_type}; charset=utf-8", dict(headers or {}))


Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Route:
    handler: Handler
    max_body_bytes: int = MAX_BODY_BYTES


class App:
    """The route table, and the tasks that run while a server serves the
    App. A handler that needs more than the request closes over it (a
    bound method, a ``functools.partial``)."""

    def __init__(self) -> None:
        self._routes: dict[str, dict[str, Route]] = {}  # path -> method -> route
        self.background: list[Callable[[], Awaitable[None]]] = []

    def add_route(self, method: str, path: str, handler: Handler, *,
                  max_body_bytes: int = MAX_BODY_BYTES) -> None:
        methods = self._routes.setdefault(path, {})
        assert method not in methods, f"{method} {path} is routed twice"
        methods[method] = Route(handler, max_body_bytes)

    def add_get(self, path: str, handler: Handler, *, head: bool = True) -> None:
        """A GET route, and HEAD (the same answer without its body) unless
        ``head`` is False (a HEAD must not change anything)."""
        self.add_route("GET", path, handler)
        if head:
            self.add_route("HEAD", path, handler)

    def add_post(self, path: str, handler: Handler, *,
                 max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.add_route("POST", path, handler, max_body_bytes=max_body_bytes)

    def run_while_serving(self, task: Callable[[], Awaitable[None]]) -> None:
        """``task()`` starts once the server listens and is cancelled when
        it stops."""
        self.background.append(task)

    def route(self, method: str, path: str) -> tuple[Route | None, tuple[str, ...]]:
        """The route of ``method`` on ``path`` (None when there is none), and
        the methods ``path`` has (none: no such path)."""
        methods = self._routes.get(path, {})
        return methods.get(method), tuple(sorted(methods))


class HttpServer:
    """Serves one :class:`App` on one address. Create and use it inside the
    running event loop; ``start`` once, ``stop`` when done (again is a no-op)."""

    def __init__(self, app: App, limits: Limits = Limits()) -> None:
        self.app = app
        self.limits = limits
        self.stopping = False
        self.refused_connections = 0   # over max_connections
        self.handler_errors = 0
        self._errors_seen: set[str] = set()
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._background: list[asyncio.Task[None]] = []

    @property
    def connections(self) -> int:
        return len(self._connections)

    @property
    def port(self) -> int:
        """The port it listens on (the OS's pick when started on port 0)."""
        assert self._server is not None and self._server.sockets, "not started"
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, host: str, port: int, tls: ssl.SSLContext | None = None) -> None:
        """Listen on ``host:port`` (HTTPS with ``tls``); raises OSError when
        it cannot bind, with nothing left bound."""
        assert self._server is None, "started twice"
        self._server = await asyncio.start_server(
            self._accept, host, port, ssl=tls, limit=READ_BYTES,
            ssl_handshake_timeout=self.limits.idle_timeout_s if tls else None)
        self._background = [asyncio.ensure_future(task()) for task in self.app.background]

    async def stop(self) -> None:
        """Stop accepting, close idle connections, let requests in flight
        finish for up to ``limits.shutdown_s`` (their connections close
        after their answer), then close whatever is left."""
        if self._server is None or self.stopping:
            return
        self.stopping = True
        self._server.close()
        for connection in list(self._connections):
            if connection.idle:
                connection.task.cancel()
        pending = {c.task for c in self._connections}
        if pending:
            _, pending = await asyncio.wait(pending, timeout=self.limits.shutdown_s)
        for task in (*pending, *self._background):
            task.cancel()
        await asyncio.gather(*pending, *self._background, return_exceptions=True)
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.stopping or len(self._connections) >= self.limits.max_connections:
            self.refused_connections += 1
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        connection = _Connection(self, reader, writer, task)
        self._connections.add(connection)
        try:
            await connection.serve()
        except asyncio.CancelledError:
            if not self.stopping:
                raise
            # stop() cancelled it: end quietly (Python 3.11's streams report
            # a connection task that ends cancelled as an error)
        finally:
            self._connections.discard(connection)

    def handler_failed(self, request: Request, exc: BaseException) -> None:
        """A handler raised: counted; the first of each kind goes to stderr."""
        self.handler_errors += 1
        kind = type(exc).__name__
        if kind not in self._errors_seen:
            self._errors_seen.add(kind)
            where = exc.__traceback__
            while where is not None and where.tb_next is not None:
                where = where.tb_next
            line = (f" at {where.tb_frame.f_code.co_filename}:{where.tb_lineno}"
                    if where is not None else "")
            print(f"http: internal error on {request.method} {request.path}: {kind}: "
                  f"{str(exc)[:200]!r}{line} (answered 500; later ones of this kind are "
                  "counted, not printed)", file=sys.stderr, flush=True)


class _Refusal(Exception):
    """A request answered with an error status, after which the connection
    closes (its body may be unread)."""

    def __init__(self, status: int, detail: str = "") -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


class _Connection:
    """One client connection: requests one after another (keep-alive as
    h11 rules it), until the client closes, an error, the idle timeout, or
    the server stops."""

    def __init__(self, server: HttpServer, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, task: asyncio.Task[Any]) -> None:
        self.server, self.reader, self.writer, self.task = server, reader, writer, task
        self.limits = server.limits
        self.h11 = h11.Connection(h11.SERVER,
                                  max_incomplete_event_size=self.limits.max_head_bytes)
        self.idle = True   # waiting for a request with none of it received: stop closes it
        self.refused = False  # answered an error: linger before closing
        peer = writer.get_extra_info("peername")
        self.remote: str | None = str(peer[0]) if isinstance(peer, tuple) and peer else None

    async def serve(self) -> None:
        try:
            while await self._exchange():
                self.h11.start_next_cycle()
            if self.refused:
                await self._linger()
        except (TimeoutError, OSError):  # a write the client did not read in time; gone
            self.writer.transport.abort()
        except h11.LocalProtocolError:
            pass  # the client went away mid-answer (h11 says: no more to send)
        finally:
            self.writer.close()

    async def _exchange(self) -> bool:
        """Read one request and answer it; whether the connection carries on."""
        deadline = asyncio.get_running_loop().time() + self.limits.idle_timeout_s
        self.idle = not self.h11.trailing_data[0]  # a pipelined request is not idle
        head = False  # a HEAD's answer has no body, whatever it says
        try:
            event = await self._next_event(deadline)
            if isinstance(event, h11.ConnectionClosed):
                return False
            assert isinstance(event, h11.Request), event
            self.idle, head = False, event.method == b"HEAD"
            request, route = await self._read_request(event, deadline)
        except TimeoutError:
            return False  # no whole request within idle_timeout_s: close, without a word
        except h11.RemoteProtocolError as exc:
            if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
                return False
            self.refused = True
            await self._send(_refused(exc.error_status_hint, str(exc)), head, close=True)
            return False
        except _Refusal as refusal:
            self.refused = True
            await self._send(_refused(refusal.status, refusal.detail), head, close=True)
            return False
        response = await self._answer(request, route)
        await self._send(response, head, close=self.server.stopping)
        return (self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE
                and not self.server.stopping)

    async def _linger(self) -> None:
        """Stop writing, then drop what the client still sends (LINGER_S)."""
        if self.writer.can_write_eof():
            self.writer.write_eof()
        dropped = 0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LINGER_S):
                while dropped < LINGER_BYTES:
                    data = await self.reader.read(READ_BYTES)
                    if not data:
                        break
                    dropped += len(data)

    async def _read_request(self, event: h11.Request,
                            deadline: float) -> tuple[Request, Route | None]:
        """The whole request (its body read within its route's limit) and
        its route; raises _Refusal for one not to serve."""
        raw = event.headers.raw_items()
        head_bytes = (len(event.method) + len(event.target) + 12
                      + sum(len(name) + len(value) + 4 for name, value in raw))
        if head_bytes > self.limits.max_head_bytes:  # h11 only bounds a head still arriving
            raise _Refusal(431, f"the request head is over {self.limits.max_head_bytes} bytes")
        if len(raw) > self.limits.max_header_lines:
            raise _Refusal(431, f"over {self.limits.max_header_lines} header lines")
        method = event.method.decode("ascii")
        path, query = _split_target(event.target.decode("ascii"))
        route, allowed = self.server.app.route(method, path)
        limit = route.max_body_bytes if route is not None else MAX_BODY_BYTES
        headers = Headers([(name.decode("ascii"), value.decode("latin-1"))
                           for name, value in event.headers])
        declared = headers.get("content-length")
        if declared is not None and int(declared) > limit:  # h11 checked it is a number
            raise _Refusal(413, f"the body is over {limit} bytes")
        if self.h11.they_are_waiting_for_100_continue:
            await self._write(h11.InformationalResponse(status_code=100, headers=[],
                                                        reason=_reason(100)))
        body = await self._read_body(limit, deadline)
        request = Request(method, path, MultiDict(parse_qsl(query, keep_blank_values=True)),
                          headers, self.remote, body, event.http_version.decode("ascii"))
        if route is None and allowed:
            return request, Route(_not_allowed(allowed))
        return request, route

    async def _read_body(self, limit: int, deadline: float) -> bytes:
        parts, size = [], 0
        while True:
            event = await self._next_event(deadline)
            if isinstance(event, h11.EndOfMessage):
                return b"".join(parts)
            assert isinstance(event, h11.Data), event
            size += len(event.data)
            if size > limit:
                raise _Refusal(413, f"the body is over {limit} bytes")
            parts.append(event.data)

    async def _next_event(self, deadline: float) -> Any:
        """h11's next event, reading as it needs; raises TimeoutError past
        ``deadline``, h11.RemoteProtocolError for what it cannot read."""
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            async with asyncio.timeout_at(deadline):
                data = await self.reader.read(READ_BYTES)
            self.h11.receive_data(data)  # b"": the client closed its side

    async def _answer(self, request: Request, route: Route | None) -> Response:
        if route is None:
            return Response.text(f"404: {http.HTTPStatus(404).phrase}\n", 404)
        try:
            response = await route.handler(request)
            _check(response)
            return response
        except Exception as exc:
            self.server.handler_failed(request, exc)
            return Response.text(f"500: {http.HTTPStatus(500).phrase}\n", 500)

    async def _send(self, response: Response, head_only: bool, close: bool) -> None:
        headers = [("Content-Type", response.content_type),
                   ("Content-Length", str(len(response.body))),
                   ("Date", email.utils.formatdate(usegmt=True)),
                   *response.headers.items()]
        if close:
            headers.append(("Connection", "close"))
        events: list[Any] = [h11.Response(status_code=response.status, headers=headers,
                                          reason=_reason(response.status))]
        if response.body and not head_only:
            events.append(h11.Data(data=response.body))
        events.append(h11.EndOfMessage())
        await self._write(*events)

    async def _write(self, *events: Any) -> None:
        self.writer.write(b"".join(self.h11.send(event) or b"" for event in events))
        async with asyncio.timeout(self.limits.idle_timeout_s):
            await self.writer.drain()


def _split_target(target: str) -> tuple[str, str]:
    """(percent-decoded path, raw query) of a request target: origin form
    ``/path?query``, or absolute form ``http://host/path?query``."""
    if not target.startswith("/") and "://" in target:
        parts = urlsplit(target)
        return unquote(parts.path or "/"), parts.query
    path, _, query = target.partition("?")
    return unquote(path), query


def _reason(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


def _refused(status: int, detail: str) -> Response:
    """An error's answer: its status, and what went wrong in words."""
    detail = f" ({detail})" if detail else ""
    return Response.text(f"{status}: {_reason(status).decode()}{detail}\n", status)


def _not_allowed(allowed: tuple[str, ...]) -> Handler:
    async def not_allowed(request: Request) -> Response:
        return Response.text(f"405: {http.HTTPStatus(405).phrase}\n", 405,
                             headers={"Allow": ", ".join(allowed)})
    return not_allowed


def _check(response: Response) -> None:
    """Refuse what the handler returned before any of it is sent (so a bad
    one is a 500, not a half-written answer)."""
    if not isinstance(response, Response):
        raise TypeError(f"a handler returned {type(response).__name__}, not a Response")
    names = {name.lower() for name in response.headers}
    if names & {"content-type", "content-length", "transfer-encoding", "connection"}:
        raise ValueError("a Response's headers name what the server writes itself")
    # h11 checks the status and every header (no CR or LF in a value, say)
    h11.Response(status_code=response.status, headers=list(response.headers.items()))
