"""The front end each clerk process runs: the JSON protocol (and DNS) on
UDP and TCP port ``--port + i``, answered through the cluster.

The JSON protocol is the original program's, kept compatible and made
honest:

    {"Type":"Put","Key":K,"Value":V[,"Token":T][,"Seq":N]}
        -> {"Type":"PutOk","Key":K,"Value":V[,"Token":T]}
           (the token comes back once, when the upload claims the name)
        |  {"Type":"Error","Error":"<reason>"}
    {"Type":"Query","Key":K}
        -> {"Type":"Response","Key":K,"Value":V}   ("" when K is unknown)

V is an address or a list of addresses. Without ``Seq`` the front end
stamps the upload with its wall clock in milliseconds, so later uploads win.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Callable

from .cluster_client import ClusterClient, ClusterTimeout
from .messages import ClerkStatus, Record, RecordOp, Status
from .records import InvalidRecord, checked_op, token_hash
from .server import die_with_parent
from .transport import LAUNCHER

STATUS_INTERVAL_S = 0.25
PUT_TIMEOUT_S = 3.0
QUERY_TIMEOUT_S = 2.0
MAX_LATENCY_SAMPLES = 512


@dataclass(frozen=True, slots=True)
class FrontEndSettings:
    servers: tuple[int, ...]
    port: int = 9876
    bind: str = "127.0.0.1"
    zone: str = "mydns."
    ttl: int = 60


@dataclass(slots=True)
class FrontEndCounters:
    requests_received: int = 0
    puts_ok: int = 0
    puts_failed: int = 0
    queries_ok: int = 0
    queries_failed: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    def record_latency(self, started: float) -> None:
        self.latencies_ms.append((time.monotonic() - started) * 1000)
        if len(self.latencies_ms) > MAX_LATENCY_SAMPLES:
            del self.latencies_ms[:MAX_LATENCY_SAMPLES // 2]


class RequestError(Exception):
    """A request we refuse; the message goes back to the client as is."""


def _error(reason: str) -> dict[str, Any]:
    return {"Type": "Error", "Error": reason}


def _addresses_value(record: Record) -> str | list[str]:
    addresses = list(record.ipv4) + list(record.ipv6)
    return addresses[0] if len(addresses) == 1 else addresses


class JsonFrontEnd:
    """Answers the JSON protocol through a :class:`ClusterClient`."""

    def __init__(self, client: ClusterClient, counters: FrontEndCounters) -> None:
        self._client = client
        self.counters = counters

    async def handle(self, data: bytes) -> bytes:
        """One request datagram in, one reply datagram out. Never raises."""
        self.counters.requests_received += 1
        started = time.monotonic()
        try:
            request = self._parse(data)
            if request["Type"] == "Put":
                reply = await self._put(request)
            else:
                reply = await self._query(request)
            self.counters.record_latency(started)
        except RequestError as exc:
            reply = _error(str(exc))
        return json.dumps(reply, separators=(",", ":")).encode()

    def _parse(self, data: bytes) -> dict[str, Any]:
        try:
            request = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise RequestError(f"request is not valid JSON: {exc}") from None
        if not isinstance(request, dict):
            raise RequestError("request must be a JSON object with a Type")
        if request.get("Type") not in ("Put", "Query"):
            raise RequestError(f"unknown Type {request.get('Type')!r}; use \"Put\" or \"Query\"")
        if not isinstance(request.get("Key"), str):
            raise RequestError("Key must be a string (the host name)")
        return request

    async def _put(self, request: dict[str, Any]) -> dict[str, Any]:
        token = request.get("Token")
        if token is not None and not isinstance(token, str):
            self.counters.puts_failed += 1
            raise RequestError("Token must be a string")
        seq = request.get("Seq", int(time.time() * 1000))
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            self.counters.puts_failed += 1
            raise RequestError("Seq must be a non-negative integer")
        value = request.get("Value")
        new_token = None if token else secrets.token_urlsafe(24)
        try:
            op = checked_op(RecordOp("record_set", request["Key"],
                                     ipv4=tuple(_as_list(value)), seq=seq,
                                     owner=token_hash(token or new_token or "")))
        except InvalidRecord as exc:
            self.counters.puts_failed += 1
            raise RequestError(str(exc)) from None
        outcome = await self._call(op, PUT_TIMEOUT_S, is_put=True)
        if outcome.status != Status.OK:
            self.counters.puts_failed += 1
            raise RequestError(outcome.value)
        self.counters.puts_ok += 1
        reply: dict[str, Any] = {"Type": "PutOk", "Key": request["Key"], "Value": value}
        if outcome.value == "claimed" and new_token:
            reply["Token"] = new_token
        return reply

    async def _query(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            op = checked_op(RecordOp("record_get", request["Key"]))
        except InvalidRecord as exc:
            self.counters.queries_failed += 1
            raise RequestError(str(exc)) from None
        outcome = await self._call(op, QUERY_TIMEOUT_S, is_put=False)
        if outcome.status != Status.OK:
            self.counters.queries_failed += 1
            raise RequestError(outcome.value)
        self.counters.queries_ok += 1
        value = _addresses_value(outcome.records[0]) if outcome.records else ""
        return {"Type": "Response", "Key": request["Key"], "Value": value}

    async def _call(self, op: RecordOp, timeout_s: float, is_put: bool):
        try:
            return await self._client.call(op, timeout_s)
        except ClusterTimeout as exc:
            if is_put:
                self.counters.puts_failed += 1
            else:
                self.counters.queries_failed += 1
            raise RequestError(f"{exc}; the update may or may not have been applied, "
                               "try again" if is_put else f"{exc}; try again") from None


def _as_list(value: object) -> list[Any]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return value
    raise RequestError("Value must be an address or a list of addresses")


class _UdpFrontEnd(asyncio.DatagramProtocol):
    def __init__(self, json_front: JsonFrontEnd,
                 dns_handler: Callable[[bytes, str], Any] | None) -> None:
        self._json = json_front
        self._dns = dns_handler
        self._transport: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if data[:1] == b"{":
            task = asyncio.ensure_future(self._answer_json(data, addr))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _answer_json(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = await self._json.handle(data)
        if self._transport is not None:
            self._transport.sendto(reply, addr)


def _status(index: int, client: ClusterClient, counters: FrontEndCounters) -> ClerkStatus:
    return ClerkStatus(index, os.getpid(), counters.puts_ok, counters.puts_failed,
                       counters.queries_ok, counters.queries_failed, client.counters.retries,
                       counters.requests_received, tuple(counters.latencies_ms[-64:]))


async def _report_status(index: int, client: ClusterClient, counters: FrontEndCounters) -> None:
    while not client.closed.is_set():
        client.send_status(LAUNCHER, _status(index, client, counters))
        try:
            await asyncio.wait_for(client.closed.wait(), STATUS_INTERVAL_S)
        except asyncio.TimeoutError:
            pass


async def _serve(index: int, address: int, settings: FrontEndSettings, conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    client = ClusterClient(conn, address, settings.servers)
    counters = FrontEndCounters()
    json_front = JsonFrontEnd(client, counters)
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _UdpFrontEnd(json_front, None), local_addr=(settings.bind, settings.port + index))
    reporter = asyncio.ensure_future(_report_status(index, client, counters))
    try:
        await asyncio.wait([asyncio.ensure_future(stop.wait()),
                            asyncio.ensure_future(client.closed.wait())],
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        reporter.cancel()
        transport.close()
        if not client.closed.is_set():
            # The final counters, so the launcher's table counts every operation.
            client.send_status(LAUNCHER, _status(index, client, counters))
            client.flush_now()


def run_clerk(index: int, address: int, settings: FrontEndSettings, conn: Connection) -> None:
    """Process entry point of clerk ``index`` (front end on port + index)."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(_serve(index, address, settings, conn))
