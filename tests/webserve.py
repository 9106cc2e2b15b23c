"""Serving a :class:`mydns_lab.web.http.App` in a test, and asking it
things: the app on 127.0.0.1 at a port the OS picks (:func:`serving`),
requests through the standard library's ``http.client`` on a thread
(:func:`fetch`: a client that shares no code with the server), raw bytes
for what no polite client sends (:func:`exchange`), and requests built
without a socket for handlers called directly (:func:`make_request`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
from dataclasses import dataclass
from typing import AsyncIterator, Mapping
from urllib.parse import parse_qsl, urlsplit

from mydns_lab.web.http import App, Headers, HttpServer, Limits, MultiDict, Request

TIMEOUT_S = 10.0  # no test waits this long unless the server is broken


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: http.client.HTTPMessage  # case-insensitive ``get``; ``dict()`` of it is exact
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()


@contextlib.asynccontextmanager
async def serving(app: App, limits: Limits = Limits()) -> AsyncIterator[HttpServer]:
    """``app`` served on 127.0.0.1 (``server.port``) until the block ends."""
    server = HttpServer(app, limits)
    await server.start("127.0.0.1", 0)
    try:
        yield server
    finally:
        await server.stop()


async def fetch(port: int, target: str, method: str = "GET",
                headers: Mapping[str, str] | None = None, body: bytes | None = None) -> Reply:
    """One request on a connection of its own, by ``http.client``."""
    return await asyncio.to_thread(_fetch, port, target, method, dict(headers or {}), body)


def _fetch(port: int, target: str, method: str, headers: dict[str, str],
           body: bytes | None) -> Reply:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)
    try:
        connection.request(method, target, body=body, headers=headers)
        response = connection.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        connection.close()


async def exchange(port: int, raw: bytes) -> bytes:
    """Send ``raw`` on a new connection and read until the server closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), TIMEOUT_S)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def basic_auth(user: str, password: str) -> str:
    """An ``Authorization`` header's value for HTTP Basic credentials."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def make_request(target: str, remote: str | None = "127.0.0.1", method: str = "GET",
                 headers: Mapping[str, str] | None = None) -> Request:
    """A request as the server would hand it to a handler, without a socket."""
    parts = urlsplit(target)
    return Request(method, parts.path, MultiDict(parse_qsl(parts.query, keep_blank_values=True)),
                   Headers(list((headers or {}).items())), remote, b"")
