"""The front ends' HTTP server itself (:mod:`mydns_lab.web.http`): routing,
HEAD, keep-alive and HTTP/1.0, every limit a client on the LAN meets,
handler failures, the graceful stop and a failed bind, on 127.0.0.1.

Requests go through ``http.client`` (tests/webserve.py) where a polite
client is meant, and as raw bytes where the test is what the server does
with bytes no polite client sends. Timeouts are the server's own, made
small here; the tests wait for outcomes, never for time to pass.
"""

from __future__ import annotations

import asyncio
import http.client
import socket
import subprocess
import sys
import time
from typing import Awaitable, Callable

import pytest

from mydns_lab.web.http import App, HttpServer, Limits, Request, Response
from tests.webserve import TIMEOUT_S, exchange, fetch, serving

DEADLINE_S = 5.0


async def until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` until it holds; fail after DEADLINE_S."""
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {DEADLINE_S:g} s waiting for {what}")
        await asyncio.sleep(0.01)  # the polling interval, not a wait for an outcome


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 4 * TIMEOUT_S))


async def echo(request: Request) -> Response:
    """What the server made of the request, one fact a line."""
    lines = [f"method={request.method}", f"path={request.path}",
             f"names={','.join(request.query.getall('name', []))}",
             f"first={request.query.get('name', '-')}",
             f"agent={request.headers.get('USER-AGENT', '-')}",
             f"remote={request.remote}", f"body={request.body.decode()}",
             f"version={request.http_version}"]
    return Response.text("\n".join(lines) + "\n", headers={"X-Echo": "yes"})


def echo_app(max_body_bytes: int = 100) -> App:
    app = App()
    app.add_get("/echo", echo)
    app.add_post("/echo", echo, max_body_bytes=max_body_bytes)
    app.add_get("/get-only", echo, head=False)
    return app


def facts(reply_text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in reply_text.splitlines())


def head_of(raw: bytes) -> tuple[str, dict[str, str], bytes]:
    """(status line, headers by lower-case name, body) of one raw reply."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    return status, {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)}, body


# --- routes ----------------------------------------------------------------

def test_a_route_gets_the_request_as_sent() -> None:
    async def test() -> None:
        async with serving(echo_app()) as server:
            reply = await fetch(server.port, "/echo?name=a&name=b%20c&empty=",
                                headers={"User-Agent": "tester/1"})
            assert reply.status == 200
            assert reply.headers["Content-Type"] == "text/plain; charset=utf-8"
            assert reply.headers["X-Echo"] == "yes" and reply.headers["Date"].endswith("GMT")
            assert int(reply.headers["Content-Length"]) == len(reply.body)
            got = facts(reply.text)
            assert got == {"method": "GET", "path": "/echo", "names": "a,b c", "first": "a",
                           "agent": "tester/1", "remote": "127.0.0.1", "body": "",
                           "version": "1.1"}
            posted = await fetch(server.port, "/echo", "POST", body=b"hello")
            assert facts(posted.text)["body"] == "hello"
            # percent-decoded path, and the absolute form a proxy would send
            raw = await exchange(server.port, b"GET http://127.0.0.1/%65cho?name=z HTTP/1.1\r\n"
                                 b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n")
            assert raw.startswith(b"HTTP/1.1 200 OK\r\n"), raw
            assert b"path=/echo\nnames=z\n" in raw
    run(test)


def test_unknown_paths_are_404_and_wrong_methods_405_with_allow() -> None:
    async def test() -> None:
        async with serving(echo_app()) as server:
            missing = await fetch(server.port, "/nowhere")
            assert (missing.status, missing.text) == (404, "404: Not Found\n")
            wrong = await fetch(server.port, "/echo", "DELETE")
            assert wrong.status == 405 and wrong.headers["Allow"] == "GET, HEAD, POST"
            head = await fetch(server.port, "/get-only", "HEAD")
            assert head.status == 405 and head.headers["Allow"] == "GET"
    run(test)


def test_head_answers_the_get_headers_without_the_body() -> None:
    async def test() -> None:
        async with serving(echo_app()) as server:
            get = await fetch(server.port, "/echo")
            raw = await exchange(server.port, b"HEAD /echo HTTP/1.1\r\nHost: x\r\n"
                                 b"Connection: close\r\n\r\n")
            status, headers, body = head_of(raw)
            assert status == "HTTP/1.1 200 OK" and body == b"", raw
            assert headers["content-length"] == str(len(get.body) + 1)  # method=HEAD, not GET
            assert headers["x-echo"] == "yes"
    run(test)


# --- connections -----------------------------------------------------------

def test_keep_alive_serves_several_requests_on_one_connection() -> None:
    async def test() -> None:
        async with serving(echo_app()) as server:
            def three_on_one() -> list[int]:
                connection = http.client.HTTPConnection("127.0.0.1", server.port,
                                                        timeout=TIMEOUT_S)
                statuses, sockets = [], set()
                for target in ("/echo?name=1", "/nowhere", "/echo?name=3"):
                    connection.request("GET", target)
                    reply = connection.getresponse()
                    reply.read()
                    statuses.append(reply.status)
                    sockets.add(id(connection.sock))
                connection.close()
                assert len(sockets) == 1, "http.client had to connect again"
                return statuses
            assert await asyncio.to_thread(three_on_one) == [200, 404, 200]
            # pipelined: three requests in one write, answered in order
            raw = await exchange(server.port, b"".join(
                f"GET /echo?name={n} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode()
                for n, extra in ((1, ""), (2, ""), (3, "Connection: close\r\n"))))
            assert raw.count(b"HTTP/1.1 200 OK") == 3, raw
            assert [raw.index(f"first={n}".encode()) for n in (1, 2, 3)] == sorted(
                raw.index(f"first={n}".encode()) for n in (1, 2, 3))
    run(test)


def test_http_1_0_is_answered_and_closed() -> None:
    async def test() -> None:
        async with serving(echo_app()) as server:
            raw = await exchange(server.port, b"GET /echo HTTP/1.0\r\n\r\n")  # read() ends: closed
            status, headers, body = head_of(raw)
            assert status == "HTTP/1.1 200 OK", raw
            assert headers["connection"] == "close"
            assert b"version=1.0" in body and raw.count(b"HTTP/1.1") == 1
    run(test)


def test_a_malformed_request_is_400_and_closed() -> None:
    async def test() -> None:
        async with serving(echo_app()) as server:
            for bad in (b"NOT HTTP AT ALL\r\n\r\n", b"GET /echo HTTP/1.1\r\n\r\n",  # no Host
                        b"GET /echo HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
                        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
                        b"Content-Length: 2\r\n\r\nab"):
                raw = await exchange(server.port, bad + b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
                status, headers, body = head_of(raw)
                assert status == "HTTP/1.1 400 Bad Request", (bad, raw)
                assert headers["connection"] == "close" and body.startswith(b"400: Bad Request")
                assert raw.count(b"HTTP/1.1") == 1, "nothing read after a malformed request"
    run(test)


def test_a_head_over_8_kib_or_over_64_lines_is_431() -> None:
    async def test() -> None:
        async with serving(echo_app()) as server:
            big = b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8200 + b"\r\n\r\n"
            assert (await exchange(server.port, big)).startswith(
                b"HTTP/1.1 431 Request Header Fields Too Large")
            endless = b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000  # never ends
            assert (await exchange(server.port, endless)).startswith(b"HTTP/1.1 431")
            def with_lines(count: int) -> bytes:  # Host and Connection, then X-n lines
                return (b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                        + b"".join(b"X-%d: 1\r\n" % i for i in range(count - 2)) + b"\r\n")
            raw = await exchange(server.port, with_lines(65))
            assert raw.startswith(b"HTTP/1.1 431") and b"over 64 header lines" in raw
            assert (await exchange(server.port, with_lines(64))).startswith(b"HTTP/1.1 200")
    run(test)


def test_a_body_over_the_routes_limit_is_413() -> None:
    async def test() -> None:
        async with serving(echo_app(max_body_bytes=100)) as server:
            assert (await fetch(server.port, "/echo", "POST", body=b"x" * 100)).status == 200
            declared = await fetch(server.port, "/echo", "POST", body=b"x" * 101)
            assert declared.status == 413 and declared.headers["Connection"] == "close"
            chunked = (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                       + (b"40\r\n" + b"y" * 64 + b"\r\n") * 2 + b"0\r\n\r\n")
            assert (await exchange(server.port, chunked)).startswith(
                b"HTTP/1.1 413 Request Entity Too Large")
            # a GET route has the default limit (16 KiB)
            assert (await fetch(server.port, "/echo", body=b"z" * 20_000)).status == 413
    run(test)


def test_expect_100_continue_is_answered_before_the_body() -> None:
    async def test() -> None:
        async with serving(echo_app()) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                         b"Expect: 100-continue\r\nConnection: close\r\n\r\n")
            assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT_S) == \
                b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(b"ok")
            rest = await asyncio.wait_for(reader.read(), TIMEOUT_S)
            assert rest.startswith(b"HTTP/1.1 200") and b"body=ok" in rest
            writer.close()
    run(test)


def test_an_idle_connection_is_closed_after_the_timeout() -> None:
    async def test() -> None:
        async with serving(echo_app(), Limits(idle_timeout_s=0.2)) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            assert await asyncio.wait_for(reader.read(), TIMEOUT_S) == b""  # closed, unasked
            writer.close()
            # after an answer, the same: a kept-alive connection waits 0.2 s at most
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
            raw = await asyncio.wait_for(reader.read(), TIMEOUT_S)
            assert raw.startswith(b"HTTP/1.1 200") and raw.count(b"HTTP/1.1") == 1
            writer.close()
            # a request trickling in gets the same time in all, not per byte
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /echo HTTP/1.1\r\n")
            assert await asyncio.wait_for(reader.read(), TIMEOUT_S) == b""
            writer.close()
            await until(lambda: server.connections == 0, "the server to let go")
    run(test)


def test_connections_over_the_limit_are_closed() -> None:
    async def test() -> None:
        async with serving(echo_app(), Limits(max_connections=2)) as server:
            held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(2)]
            await until(lambda: server.connections == 2, "two connections served")
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                refused = await asyncio.wait_for(reader.read(), TIMEOUT_S)
            except ConnectionResetError:
                refused = b""
            assert refused == b"" and server.refused_connections == 1
            writer.close()
            held[0][1].close()
            await until(lambda: server.connections == 1, "a held connection to close")
            assert (await fetch(server.port, "/echo")).status == 200
            for _, w in held:
                w.close()
    run(test)


def test_a_handler_that_raises_is_500_and_the_server_serves_on(
        capsys: pytest.CaptureFixture[str]) -> None:
    async def broken(request: Request) -> Response:
        raise RuntimeError("a bug")

    async def bad_header(request: Request) -> Response:
        return Response.text("x", headers={"X-Split": "a\r\nInjected: yes"})

    app = echo_app()
    app.add_get("/broken", broken)
    app.add_get("/bad-header", bad_header)

    async def test() -> None:
        async with serving(app) as server:
            raw = await exchange(server.port, b"GET /broken HTTP/1.1\r\nHost: x\r\n\r\n"
                                 b"GET /broken HTTP/1.1\r\nHost: x\r\n\r\n"
                                 b"GET /bad-header HTTP/1.1\r\nHost: x\r\n\r\n"
                                 b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert raw.count(b"HTTP/1.1 500 Internal Server Error") == 3, raw
            assert b"Injected" not in raw
            assert raw.count(b"HTTP/1.1 200 OK") == 1, "the same connection carries on"
            assert server.handler_errors == 3
    run(test)
    printed = capsys.readouterr().err
    assert printed.count("RuntimeError: 'a bug'") == 1, printed  # the first of its kind only
    assert "on GET /broken" in printed


# --- starting and stopping --------------------------------------------------

def test_stop_lets_a_request_in_flight_finish_and_closes_idle_ones() -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow(request: Request) -> Response:
        entered.set()
        await release.wait()
        return Response.text("finished\n")

    async def test() -> None:
        app = echo_app()
        app.add_get("/slow", slow)
        server = HttpServer(app, Limits(shutdown_s=TIMEOUT_S))
        await server.start("127.0.0.1", 0)
        port = server.port
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
        await until(lambda: server.connections == 1, "the idle connection served")
        in_flight = asyncio.ensure_future(exchange(
            port, b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"))  # keep-alive: the stop closes
        await asyncio.wait_for(entered.wait(), TIMEOUT_S)
        stopping = asyncio.ensure_future(server.stop())
        assert await asyncio.wait_for(idle_reader.read(), TIMEOUT_S) == b""
        with pytest.raises(OSError):  # no longer accepting
            await asyncio.open_connection("127.0.0.1", port)
        assert not stopping.done() and not in_flight.done()
        release.set()
        status, headers, body = head_of(await asyncio.wait_for(in_flight, TIMEOUT_S))
        assert (status, body) == ("HTTP/1.1 200 OK", b"finished\n")
        assert headers["connection"] == "close"
        await asyncio.wait_for(stopping, TIMEOUT_S)
        assert server.connections == 0
        idle_writer.close()
    run(test)


def test_stop_closes_what_is_still_running_after_the_shutdown_time() -> None:
    started: list[float] = []
    entered, background_cancelled = asyncio.Event(), asyncio.Event()

    async def forever(request: Request) -> Response:
        entered.set()
        await asyncio.Event().wait()
        raise AssertionError("never answered")

    async def background() -> None:
        started.append(time.monotonic())
        try:
            await asyncio.Event().wait()
        finally:
            background_cancelled.set()

    async def test() -> None:
        app = echo_app()
        app.add_get("/forever", forever)
        app.run_while_serving(background)
        server = HttpServer(app, Limits(shutdown_s=0.1))
        await server.start("127.0.0.1", 0)
        in_flight = asyncio.ensure_future(exchange(
            server.port, b"GET /forever HTTP/1.1\r\nHost: x\r\n\r\n"))
        await asyncio.wait_for(entered.wait(), TIMEOUT_S)
        assert started, "the background task runs while the server serves"
        await server.stop()
        assert await asyncio.wait_for(in_flight, TIMEOUT_S) == b""  # closed without an answer
        assert background_cancelled.is_set() and server.connections == 0
        await server.stop()  # again: nothing to do
    run(test)


def test_a_busy_port_raises_oserror_and_leaves_nothing_bound() -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]

    async def test() -> None:
        server = HttpServer(echo_app())
        with pytest.raises(OSError):
            await server.start("127.0.0.1", port)
        await server.stop()  # a server that never started stops as a no-op

    try:
        run(test)
    finally:
        holder.close()
    again = socket.socket()  # the port is free: the failed start kept no socket
    again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    again.bind(("127.0.0.1", port))
    again.listen()
    again.close()


def test_front_ends_and_the_launcher_never_import_aiohttp() -> None:
    """aiohttp is the etcd store's client alone (about 23 MB a process):
    a front end of the embedded store, and the launcher, must not load it."""
    script = ("import sys, mydns_lab.service.process, mydns_lab.__main__, mydns_lab.lab.frontend; "
              "print(sorted(m for m in sys.modules if m.split('.')[0] == 'aiohttp'))")
    found = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           timeout=60, check=True).stdout.strip()
    assert found == "[]", f"aiohttp is imported: {found}"
