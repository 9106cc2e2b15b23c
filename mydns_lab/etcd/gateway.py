"""etcd's v3 API through its JSON gateway (``POST /v3/...``), over aiohttp.

Chosen over a gRPC client by measurement (``bench/bench_etcd_clients.py``,
docs/deploy.md). aiohttp is the etcd store's client only: this module is
imported when a front end builds an etcd store (``service.process._store``), never
by a front end of the embedded store, which saves each one about 23 MB.
Keys and values travel base64-encoded and 64-bit integers as decimal
strings, as the gateway's JSON mapping has them.

:class:`Gateway` speaks to the members listed in ``--etcd-endpoints``: a
request goes to the member that last answered, and on a connection error or
a timeout moves on to the next (endpoint fail-over); an error etcd answered
with (a refused request) is raised as :class:`EtcdError` at once. With a
user, it authenticates and sends the token, and authenticates again when
etcd says the token expired.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any, AsyncIterator

import aiohttp

from .options import EtcdOptions, tls_context

REQUEST_TIMEOUT_S = 1.0
"""One request to one member; past it the next member is tried. etcd's own
election takes about a second with its defaults, so a member without a
leader answers within this (with an error) rather than hanging."""
WATCH_IDLE_TIMEOUT_S = 15.0


class EtcdUnavailable(Exception):
    """No member answered; the request may or may not have taken effect."""


class EtcdError(Exception):
    """etcd answered with an error; ``message`` is etcd's own words."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.message, self.code = message, code

    @property
    def compacted(self) -> bool:
        return "compacted" in self.message

    @property
    def no_space(self) -> bool:
        return "space exceeded" in self.message


def b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def prefix_end(prefix: str) -> str:
    """The range end that covers every key starting with ``prefix``."""
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return raw.decode()


def range_request(key: str) -> dict[str, Any]:
    """A transaction's read of one key."""
    return {"request_range": {"key": b64(key)}}


def first_kv(response: dict[str, Any]) -> dict[str, Any] | None:
    """The key-value a transaction's ``range_request`` found, or None."""
    kvs = response.get("response_range", {}).get("kvs") or ()
    return kvs[0] if kvs else None


def unchanged(key: str, seen: dict[str, Any] | None) -> dict[str, Any]:
    """A comparison that holds while ``key`` is as it was read: its
    ``mod_revision``, or 0 for a key that was absent (and still is)."""
    return {"key": b64(key), "target": "MOD", "result": "EQUAL",
            "mod_revision": seen.get("mod_revision", "0") if seen else "0"}


def put_request(key: str, value: str, lease: int = 0) -> dict[str, Any]:
    """A transaction's write of one key, on ``lease`` when not 0."""
    put: dict[str, Any] = {"key": b64(key), "value": b64(value)}
    if lease:
        put["lease"] = str(lease)
    return {"request_put": put}


class Gateway:
    """One front end's connection to the etcd cluster. Create it inside the
    running event loop; :meth:`close` when done."""

    def __init__(self, options: EtcdOptions) -> None:
        self.options = options
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=tls_context(options) or False, limit=256),
            timeout=aiohttp.ClientTimeout(total=None))
        self._current = 0        # index of the member that last answered
        self._token: str | None = None

    async def close(self) -> None:
        await self._session.close()

    # --- the KV calls the store uses ------------------------------------------------

    async def range(self, key: str, end: str | None = None, *, limit: int = 0,
                    revision: int = 0, serializable: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {"key": b64(key)}
        if end is not None:
            body["range_end"] = b64(end)
        if limit:
            body["limit"] = str(limit)
        if revision:
            body["revision"] = str(revision)
        if serializable:
            body["serializable"] = True
        return await self.call("/v3/kv/range", body)

    async def txn(self, compare: list[dict[str, Any]], success: list[dict[str, Any]],
                  failure: list[dict[str, Any]] | None = None, *,
                  writes: bool = True) -> dict[str, Any]:
        """A transaction. One that ``writes`` goes to one member only: when
        it fails without an answer it may have been applied, and only the
        caller knows how to retry it safely (EtcdUnavailable)."""
        return await self.call("/v3/kv/txn", {"compare": compare, "success": success,
                                              "failure": failure or []},
                               once=writes)

    async def lease_grant(self, ttl_s: int) -> int:
        answer = await self.call("/v3/lease/grant", {"TTL": str(ttl_s)})
        return int(answer["ID"])

    async def member_status(self, endpoint: str) -> dict[str, Any]:
        """``/v3/maintenance/status`` of one member (no fail-over)."""
        return await self._post(endpoint, "/v3/maintenance/status", {}, REQUEST_TIMEOUT_S)

    async def members(self) -> list[dict[str, Any]]:
        answer = await self.call("/v3/cluster/member/list", {})
        return list(answer.get("members", ()))

    async def watch(self, key: str, end: str, start_revision: int) -> AsyncIterator[
            dict[str, Any]]:
        """Every watch response (``result``: ``events``, ``header``,
        ``compact_revision``) for keys in [key, end) from
        ``start_revision``, until the stream breaks (raises EtcdUnavailable)
        or the caller stops iterating. etcd answers a revision already
        compacted with a response whose ``compact_revision`` is set, then
        ends the watch."""
        body = {"create_request": {"key": b64(key), "range_end": b64(end),
                                   "start_revision": str(start_revision)}}
        endpoint = self._endpoint()
        try:
            async with self._session.post(
                    endpoint + "/v3/watch", json=body, headers=self._headers(),
                    timeout=aiohttp.ClientTimeout(total=None, connect=REQUEST_TIMEOUT_S,
                                                  sock_read=WATCH_IDLE_TIMEOUT_S)) as answer:
                if answer.status != 200:
                    raise EtcdUnavailable(f"{endpoint}: watch answered HTTP {answer.status}")
                async for line in answer.content:
                    if not line.strip():
                        continue
                    message = json.loads(line)
                    if "error" in message:
                        raise EtcdUnavailable(f"{endpoint}: {message['error'].get('message')}")
                    yield message.get("result", {})
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, OSError) as exc:
            self._next_endpoint()
            raise EtcdUnavailable(f"{endpoint}: watch broke: {exc or type(exc).__name__}") \
                from None

    # --- requests, fail-over, auth ----------------------------------------------------

    async def call(self, path: str, body: dict[str, Any], once: bool = False) -> dict[str, Any]:
        """POST ``body`` to ``path`` on a member that answers; raises
        EtcdUnavailable when none does, EtcdError when etcd refused. With
        ``once``, only the current member is tried (the next call goes to
        the next member if it failed): for requests not safe to repeat."""
        problems = []
        for _ in range(1 if once else len(self.options.endpoints)):
            endpoint = self._endpoint()
            try:
                return await self._post(endpoint, path, body, REQUEST_TIMEOUT_S)
            except EtcdUnavailable as exc:
                problems.append(str(exc))
                self._next_endpoint()
            except EtcdError as exc:
                if "auth token" in exc.message and self.options.user:
                    self._token = None  # expired: authenticate again, once
                    return await self._post(endpoint, path, body, REQUEST_TIMEOUT_S)
                if _leaderless(exc):
                    problems.append(f"{endpoint}: {exc.message}")
                    self._next_endpoint()
                    continue
                raise
        raise EtcdUnavailable("; ".join(problems))

    async def _post(self, endpoint: str, path: str, body: dict[str, Any],
                    timeout_s: float) -> dict[str, Any]:
        if self.options.user and self._token is None and path != "/v3/auth/authenticate":
            await self._authenticate(endpoint)
        try:
            async with self._session.post(endpoint + path, json=body, headers=self._headers(),
                                          timeout=aiohttp.ClientTimeout(total=timeout_s)) as r:
                answer = await r.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, OSError) as exc:
            raise EtcdUnavailable(f"{endpoint}: {exc or type(exc).__name__}") from None
        if not isinstance(answer, dict):
            raise EtcdUnavailable(f"{endpoint}: not a JSON object")
        if "error" in answer or ("code" in answer and "message" in answer):
            raise EtcdError(str(answer.get("message") or answer.get("error")),
                            int(answer.get("code", 0)))
        return answer

    async def _authenticate(self, endpoint: str) -> None:
        try:
            answer = await self._post(endpoint, "/v3/auth/authenticate",
                                      {"name": self.options.user,
                                       "password": self.options.password or ""},
                                      REQUEST_TIMEOUT_S)
        except EtcdError as exc:
            if "not enabled" in exc.message:
                # Auth is off (an operator turning it on member by member, say):
                # requests go without a token, which etcd then accepts.
                self._token = ""
                return
            raise
        self._token = answer["token"]

    def _headers(self) -> dict[str, str]:
        return {"Authorization": self._token} if self._token else {}

    def _endpoint(self) -> str:
        return self.options.endpoints[self._current % len(self.options.endpoints)]

    def _next_endpoint(self) -> None:
        self._current = (self._current + 1) % len(self.options.endpoints)


def _leaderless(exc: EtcdError) -> bool:
    """etcd's answers that mean "this member cannot serve now; another may":
    no leader, or a request that timed out inside etcd (a leader change)."""
    words = exc.message
    return any(w in words for w in ("no leader", "leader changed", "timed out",
                                    "not capable", "stopped"))
