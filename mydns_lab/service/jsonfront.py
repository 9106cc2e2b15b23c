"""The JSON protocol of a front end, answered through the cluster.

The JSON protocol is the original program's, kept compatible and made
honest:

    {"Type":"Put","Key":K,"Value":V[,"Token":T | ,"Mac":M][,"Seq":N]}   (Mac needs Seq)
        -> {"Type":"PutOk","Key":K,"Value":V,"Outcome":"claimed"|"updated"[,"Open":true]}
        |  {"Type":"Error","Error":"<reason>","Code":"<code>"}  (codes: RequestError)
    {"Type":"Query","Key":K}
        -> {"Type":"Response","Key":K,"Value":V}   ("" when K is unknown)
    {"Type":"Stats"}
        -> {"Type":"Stats","RequestsReceived":N,"RepliesSent":N,...}
           (this front end's counters, for measuring loss: to trusted sources only)

A request may carry an ``Id`` (an integer of 64 bits at most, or a short
string: :func:`mydns_lab.net.jsonwire.echoed_id`); the reply echoes it, so a
client can drop a late or forged answer. Every datagram but an untrusted
Stats gets one reply, never longer than the request or
MAX_SMALL_REPLY_BYTES (:func:`mydns_lab.net.jsonwire.fitted_reply`).

V is an address or a list of addresses. Without ``Seq`` the front end
stamps the upload with its wall clock in milliseconds, so later uploads win.

A Put with a Token claims a free name for that token, and only that token
changes it afterwards (put.py makes and keeps one). A Put without a Token,
as the original's clients send it, claims an *open* name, which any later
Put without a Token may update, as in the original; no token or key can
take an open name (``Code: open``), and ``--open-names deny`` refuses Puts
without a Token. After the claim put.py sends no Token: a *signed* Put
carries ``Mac``, :func:`mydns_lab.records.put_mac` keyed by the owner the
store keeps (the token's hash) over zone, name, addresses and Seq, checked
here (``bad_signature``, ``unknown_name``), so a captured one changes no
other value or name, and once a newer upload is stored it is ``stale``.
Names the keys file grants to a TSIG key are for that key
only, and the zone's name servers (``ns1`` ..) for none (``Code: reserved``:
:mod:`mydns_lab.dns.nameservers`). New claims from an untrusted source are limited
per minute (``rate_limited``), the zone's size by ``--max-names``
(``zone_full``), and a name not refreshed within ``--expire`` is released
(:func:`mydns_lab.net.recordcopy.expire_records`). The rules are
:class:`mydns_lab.admission.Admission`.
"""

from __future__ import annotations

import hmac
import string
import sys
import time
from dataclasses import replace
from typing import Any

from ..admission import Admission, Refused, TrustedSources
from ..clerks import Finished
from ..net.cluster_client import ClusterTimeout, RecordStore
from ..net.jsonwire import (MAX_SMALL_REPLY_BYTES, RequestError, decode_request, echoed_id,
                           error_reply, fitted_reply, is_text, quoted)
from ..net.recordcopy import RecordCache
from ..protocol import Outcome, Record, RecordOp, Status
from ..records import (MAX_SEQ, OPEN_OWNER, InvalidRecord, checked_op, is_key_owner, json_owner,
                      put_mac, split_addresses)
from ..web.metrics import FrontEndMetrics, UpdatePath, put_outcome
from .settings import LOOPBACK_NETWORKS, PUT_TIMEOUT_S, QUERY_TIMEOUT_S, FrontEndCounters

MAX_TOKEN_CHARS = 256
NOT_THE_OWNERS = frozenset({"owned", "bad_signature", "open"})
"""The Codes of a Put whose token or Mac is not the name owner's: guesses,
counted per source by :meth:`mydns_lab.admission.Admission.not_owner`."""


_REFUSAL_CODES = {Status.ERROR: "invalid", Status.OWNED: "owned", Status.STALE: "stale",
                  Status.NO_SPACE: "nospace", Status.OPEN: "open", Status.ZONE_FULL: "zone_full"}
"""The ``Code`` of each status the record store refuses with."""


def _addresses_value(record: Record) -> str | list[str]:
    addresses = list(record.ipv4) + list(record.ipv6)
    return addresses[0] if len(addresses) == 1 else addresses


class JsonFrontEnd:
    """Answers the JSON protocol through a :class:`RecordStore`; Stats
    only to sources in ``trusted`` (networks in CIDR notation). Puts pass
    ``admission`` first (None: no limits, as in unit tests). A signed Put's
    ``Mac`` is checked against the owner in ``records``, this front end's
    copy, then (copy not loaded, behind, or None as in unit tests) against
    a read through the cluster; ``zone`` is part of what is signed."""

    def __init__(self, client: RecordStore, counters: FrontEndCounters,
                 trusted: tuple[str, ...] = LOOPBACK_NETWORKS, *,
                 admission: Admission | None = None, records: RecordCache | None = None,
                 zone: str = "mydns.", metrics: FrontEndMetrics | None = None) -> None:
        self._client = client
        self._metrics = metrics
        self.counters = counters
        self._trusted = TrustedSources(trusted)
        self._admission = admission
        self._records = records
        self._zone = zone
        self._internal_errors_seen: set[str] = set()

    async def handle(self, data: bytes, source: str | None = None,
                     path: UpdatePath = UpdatePath.JSON) -> bytes | None:
        """One request datagram from IP address ``source`` (None: not from
        the network, never trusted) in, one reply datagram out, at most
        ``max(len(data), MAX_SMALL_REPLY_BYTES)`` long; None (send nothing)
        for Stats from an untrusted source. Never raises: an exception
        inside is a bug, answered with Code ``internal``. A Put is counted
        in the metrics under ``path`` (the HTTP routes': dyndns2)."""
        self.counters.requests_received += 1
        started = time.monotonic()
        request: Any = None
        try:
            request = decode_request(data)
            self._check(request)
            if request["Type"] == "Stats":
                if source not in self._trusted:
                    return None  # the operator's counters: silence leaves a spoofer nothing
                reply = self._stats()
            else:
                reply = await self._counted(request, source)
                self.counters.record_latency(started)
        except RequestError as exc:
            reply = error_reply(str(exc), exc.code)
        except Exception as exc:
            reply = self._internalerror_reply(exc)
        self.counters.replies_sent += 1
        if self._metrics is not None and isinstance(request, dict) and request.get("Type") == "Put":
            self._metrics.update_done(path, put_outcome(reply), time.monotonic() - started)
        return fitted_reply(reply, echoed_id(request), max(len(data), MAX_SMALL_REPLY_BYTES))

    def _internalerror_reply(self, exc: Exception) -> dict[str, Any]:
        """The reply to a request that failed inside the front end; the
        first failure of each kind goes to stderr, the rest are counted."""
        self.counters.internal_errors += 1
        kind = type(exc).__name__
        if kind not in self._internal_errors_seen:
            self._internal_errors_seen.add(kind)
            print(f"front end: internal error on a JSON request: {kind}: {str(exc)[:200]!r} "
                  "(later ones of this kind are counted, not printed)", file=sys.stderr, flush=True)
        return error_reply(f"the front end failed on this request ({kind}), which may or may not "
                      "have taken effect; this is a bug in MyDNS, please report it", "internal")

    def _stats(self) -> dict[str, Any]:
        """This front end's own counters, for workloads measuring loss."""
        c = self.counters
        return {"Type": "Stats", "RequestsReceived": c.requests_received,
                "RepliesSent": c.replies_sent, "PutsOk": c.puts_ok, "PutsFailed": c.puts_failed,
                "QueriesOk": c.queries_ok, "QueriesFailed": c.queries_failed,
                "InternalErrors": c.internal_errors}

    def _check(self, request: Any) -> None:
        """Refuse a request that is not a known Type with a string Key."""
        if not isinstance(request, dict):
            raise RequestError("request must be a JSON object with a Type")
        kind = request.get("Type")
        if not isinstance(kind, str) or kind not in ("Put", "Query", "Stats"):
            raise RequestError(f"unknown Type {quoted(kind)}; use \"Put\" or \"Query\"")
        if kind != "Stats" and not isinstance(request.get("Key"), str):
            raise RequestError("Key must be a string (the host name)")

    async def _counted(self, request: dict[str, Any], source: str | None) -> dict[str, Any]:
        """A checked Put or Query, counted ok, or failed when it raises."""
        put = request["Type"] == "Put"
        try:
            reply = await (self._put(request, source) if put else self._query(request))
        except Exception:
            if put:
                self.counters.puts_failed += 1
            else:
                self.counters.queries_failed += 1
            raise
        if put:
            self.counters.puts_ok += 1
        else:
            self.counters.queries_ok += 1
        return reply

    async def _put(self, request: dict[str, Any], source: str | None) -> dict[str, Any]:
        token, mac = request.get("Token"), request.get("Mac")
        if token is not None and not is_text(token, MAX_TOKEN_CHARS):
            raise RequestError(f"Token must be a string of at most {MAX_TOKEN_CHARS} characters "
                               "(text: no lone surrogate \\ud800-\\udfff)")
        if mac is not None and (token is not None or "Seq" not in request):
            raise RequestError("a signed Put carries a Mac and the Seq it signed, and no Token "
                               "(the Token only claims a name)")
        seq = request.get("Seq", int(time.time() * 1000))
        if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= MAX_SEQ:
            # The codec carries no more than 64 bits: refuse here, not in a clerk.
            raise RequestError(f"Seq must be an integer from 0 to {MAX_SEQ} "
                               "(put.py sends the time in milliseconds)")
        value = request.get("Value")
        try:
            ipv4, ipv6 = split_addresses(_as_list(value))
        except InvalidRecord as exc:
            raise RequestError(str(exc), "invalid") from None
        admission = self._admission
        op = _checked(RecordOp("record_set", request["Key"], ipv4=ipv4, ipv6=ipv6, seq=seq,
                               owner=json_owner(token) if token else OPEN_OWNER,
                               max_names=admission.policy.max_names if admission else 0))
        if admission is not None:  # first: what it refuses costs the cluster nothing
            try:
                admission.check_put(op.name, token is not None or mac is not None, source,
                                    time.time())
            except Refused as exc:
                # This front end's copy may lag a claim just made: a stored name is no claim.
                if not exc.as_claim or await self._stored(op.name) is None:
                    raise RequestError(str(exc), exc.code) from None
        try:
            if mac is not None:  # the store re-checks the owner: a stale copy cannot be abused
                op = replace(op, owner=await self._signed_owner(op, mac))
            finished = await self._call(op, PUT_TIMEOUT_S,
                                        "the update may or may not have been applied, try again")
        except RequestError as exc:
            if admission is not None and exc.code in NOT_THE_OWNERS:
                admission.not_owner(source, time.time())
            raise
        if admission is not None and finished.outcome == Outcome.CLAIMED:
            admission.claimed(source, time.time())
        reply: dict[str, Any] = {"Type": "PutOk", "Key": request["Key"], "Value": value,
                                 "Outcome": finished.outcome}
        if op.owner == OPEN_OWNER:
            reply["Open"] = True
        return reply

    async def _signed_owner(self, op: RecordOp, mac: object) -> str:
        """The owner of ``op.name`` whose key made ``mac``
        (:func:`mydns_lab.records.put_mac`), from this front end's copy or,
        when that does not verify, a linearizable read. Raises RequestError
        ``bad_request``, ``unknown_name``, ``bad_signature``, ``open`` or
        ``unavailable``; the token never reaches the front end."""
        if not (isinstance(mac, str) and len(mac) == 64 and set(mac) <= set(string.hexdigits)):
            raise RequestError("Mac must be 64 hex digits: the HMAC-SHA256 of the upload "
                               "(put.py makes it)")
        given = bytes.fromhex(mac)
        def signed_by(owner: str) -> bool:  # noqa: E306
            wanted = put_mac(owner, self._zone, op.name, op.ipv4 + op.ipv6, op.seq)
            return hmac.compare_digest(bytes.fromhex(wanted), given)
        copy = self._records
        record = copy.lookup(op.name) if copy is not None and copy.loaded else None
        if record is None or not signed_by(record.owner):
            record = await self._stored(op.name)
            if record is None:
                raise RequestError(f"no name {op.name!r} to update with a Mac (released "
                                   "unrefreshed?); claim it again with a Token", "unknown_name")
            if not is_key_owner(record.owner) and not signed_by(record.owner):
                raise RequestError(f"the Mac of this upload of {op.name!r} is not its owner's "
                                   "(another key, or changed on the way); nothing changed",
                                   "bad_signature")
        if is_key_owner(record.owner):  # its owner comes from the key's name: no secret
            raise RequestError(f"name {op.name!r} belongs to a TSIG key: change it with nsupdate "
                               "and that key", "owned")
        if record.owner == OPEN_OWNER:
            raise RequestError(f"name {op.name!r} is open: update it with a Put without Token or "
                               "Mac", "open")
        return record.owner

    async def _query(self, request: dict[str, Any]) -> dict[str, Any]:
        record = await self._stored(_checked(RecordOp("record_get", request["Key"])).name)
        value = _addresses_value(record) if record else ""
        return {"Type": "Response", "Key": request["Key"], "Value": value}

    async def _stored(self, name: str) -> Record | None:
        """``name``'s record (stored form) by a linearizable read through the cluster."""
        finished = await self._call(RecordOp("record_get", name), QUERY_TIMEOUT_S, "try again")
        return finished.records[0] if finished.records else None

    async def _call(self, op: RecordOp, timeout_s: float, on_timeout: str) -> Finished:
        """The store's OK answer to ``op``. A refusal raises RequestError with
        its Code; no answer in time raises ``unavailable``, the reason
        followed by ``on_timeout``."""
        try:
            finished = await self._client.call(op, timeout_s)
        except ClusterTimeout as exc:
            raise RequestError(f"{exc}; {on_timeout}", "unavailable") from None
        if finished.status != Status.OK:
            raise RequestError(finished.value, _REFUSAL_CODES.get(finished.status, "invalid"))
        return finished


def _checked(op: RecordOp) -> RecordOp:
    """:func:`mydns_lab.records.checked_op`, its refusal as a RequestError ``invalid``."""
    try:
        return checked_op(op)
    except InvalidRecord as exc:
        raise RequestError(str(exc), "invalid") from None


def _as_list(value: object) -> list[Any]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return value
    raise RequestError("Value must be an address or a list of addresses")
