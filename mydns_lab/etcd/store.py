"""The record store kept in etcd: what a front end runs with ``--store etcd``.

:class:`EtcdStore` answers the same operations as the embedded store, with
the interface the front end already uses for it (``call(op, timeout_s)``
gives a :class:`~mydns_lab.clerks.Finished`, or raises
:class:`~mydns_lab.net.cluster_client.ClusterTimeout`), so every rule and
reply of the front end holds unchanged on either store.

Writes are optimistic transactions: one read transaction takes the name's
record, the zone's size, the TSIG key's replay state (for a signed op) at
one revision; :func:`mydns_lab.records.decide_change` rules on them; a
write transaction applies the change only if none of what it was decided
from has changed since (each key's ``mod_revision`` compared, 0 for a key
that did not exist: the first claim), else it starts over. A write that got
no answer may have been applied; each request therefore writes its result
under a session key of its own (client id, sequence number) in the same
transaction, and a retry first looks there, so it is applied once. Session
keys are on a lease and disappear a quarter of an hour later.

Expiry is a refresh time checked in the transaction, as in the embedded
store, rather than an etcd lease per name: a lease's countdown starts over
whenever etcd elects a leader, so it can only make a name live longer than
``--expire``, and it would cost a lease (and its keep-alives) per name; the
refresh time is already in the record (TXT ``updated=``).

Reads: ``record_get`` is a linearizable range (etcd's default), so the JSON
Query and ``--dns-reads linearizable`` never predate an acknowledged
update. The front end's copy of the records is fed by ``record_changes``,
answered from a watch on the records that starts from the revision the copy
has, resumes from the last revision seen after a disconnect, and answers a
full listing (in pages, all at one revision) when etcd has compacted past
it. The zone's serial is etcd's revision.
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
from multiprocessing.connection import Connection
from typing import Any

from ..clerks import Finished
from ..net.cluster_client import ClientCounters, ClusterTimeout
from ..net.transport import Outbox
from ..protocol import KvOp, Record, RecordOp, Status, StoreOp
from ..records import (Change, InvalidRecord, accept_signed, checked_op, decide_change,
                       replayed)
from .gateway import (EtcdError, EtcdUnavailable, Gateway, b64, first_kv, prefix_end,
                      put_request, range_request, unb64, unchanged)
from .layout import (BadValue, Layout, record_from, record_value, session_from, session_value,
                     signed_from, signed_value)
from .options import EtcdOptions

FULL_PAGE = 2_000
"""Records per page of a full listing, as the embedded store pages them."""
WATCH_HOLD_S = 0.5
"""A watch with nothing new is answered empty after this long, inside the
front end's watch timeout."""
SESSION_TTL_S = 900
LEASE_RENEW_S = 300.0
RETRY_BACKOFF_S = (0.01, 0.1)
"""Jittered, doubling pause between attempts while etcd cannot answer (an
election: about a second). Capped low so an update resumes within a tenth
of a second of etcd's new leader; each attempt is one small request."""
MAX_BUFFERED_EVENTS = 100_000


class EtcdStore:
    """The record store in etcd for one front end (see the module's doc).
    Create it inside the running event loop. ``report``: a pipe to the
    launcher for status reports (None when the front end runs alone)."""

    def __init__(self, options: EtcdOptions, report: Connection | None = None) -> None:
        self.gateway = Gateway(options)
        self.layout = Layout(options.prefix)
        self.counters = ClientCounters()
        self.closed = asyncio.Event()
        self._client_id = random.getrandbits(62) | 1
        self._seq = 0
        self._rng = random.Random()
        self._lease: tuple[int, float] | None = None  # (id, monotonic time granted)
        self._report = Outbox(report) if report is not None else None
        self._events: collections.deque[tuple[int, Record]] = collections.deque()
        self._arrived = asyncio.Event()
        self._stream: asyncio.Task[None] | None = None
        self._stream_from = 0
        self._compacted = False
        # name -> (mod_revision, record) as this store last saw it (the watch,
        # listings, reads, its own writes): an update decided from it skips the
        # read round trip, and its compare catches a stale entry.
        self._known: dict[str, tuple[int, Record]] = {}

    async def close(self) -> None:
        if self._stream is not None:
            self._stream.cancel()
        await self.gateway.close()
        self.closed.set()

    async def call(self, op: StoreOp, timeout_s: float) -> Finished:
        """Run ``op`` against etcd; raises ClusterTimeout when it could not
        be done within ``timeout_s`` (a write may or may not have taken
        effect, as with the embedded store)."""
        self.counters.calls += 1
        try:
            return await asyncio.wait_for(self._run(op), timeout_s)
        except asyncio.TimeoutError:
            self.counters.timeouts += 1
            raise ClusterTimeout(f"etcd did not answer within {timeout_s:g} s") from None

    def send_status(self, dst: int, msg: object) -> None:
        """A status report to the launcher, when there is one."""
        if self._report is not None:
            try:
                self._report.send(dst, msg)
                self._report.flush()
            except OSError:
                self._report = None

    def flush_now(self) -> None:
        """Reports are written as they are sent; nothing waits."""

    # --- operations -------------------------------------------------------------------

    async def _run(self, op: StoreOp) -> Finished:
        if isinstance(op, KvOp):
            return Finished(op, Status.ERROR, "the etcd store keeps DNS records only", 1)
        if op.kind == "record_changes":
            return await self._changes(op)
        try:
            op = checked_op(op)
        except InvalidRecord as exc:
            return Finished(op, Status.ERROR, str(exc), 1)
        if op.kind == "record_get":
            return await self._read(op, self.layout.record_key(op.name), None)
        if op.kind == "record_list":
            return await self._read(op, self.layout.records, prefix_end(self.layout.records))
        return await self._write(op)

    async def _read(self, op: RecordOp, key: str, end: str | None) -> Finished:
        attempts = 0
        while True:
            attempts += 1
            try:
                answer = await self.gateway.range(key, end)
                return Finished(op, Status.OK, "", attempts, records=self._records_of(answer),
                                serial=_revision(answer))
            except EtcdUnavailable:
                await self._back_off(attempts)

    async def _write(self, op: RecordOp) -> Finished:
        self._seq += 1
        seq = self._seq
        attempts, ambiguous = 0, False
        while True:
            attempts += 1
            try:
                done = await self._write_once(op, seq, attempts, ambiguous)
                if done is not None:
                    return done
                self.counters.retries += 1  # another writer got there first: decide again
            except EtcdUnavailable:
                ambiguous = True
                self.counters.retries += 1
                await self._back_off(attempts)
            except BadValue as exc:
                return Finished(op, Status.ERROR, f"the value stored for {op.name!r} is not one "
                                f"this program wrote ({exc}); an operator must repair or delete "
                                f"it with etcdctl", attempts)
            except EtcdError as exc:
                if exc.no_space:
                    return Finished(op, Status.NO_SPACE, "etcd's space quota is exhausted "
                                    f"({exc.message}): no writes until its operator compacts "
                                    "and defragments it or raises --quota-backend-bytes",
                                    attempts)
                if "lease" in exc.message:
                    self._lease = None  # expired or revoked: take a new one
                    continue
                return Finished(op, Status.ERROR, f"etcd refused the change: {exc.message}",
                                attempts)

    async def _write_once(self, op: RecordOp, seq: int, attempts: int,
                          ambiguous: bool) -> Finished | None:
        """One read-decide-write round; None when the write lost a race.

        The first attempt of an unsigned op on a name this store has seen
        is decided from what it saw, as Kubernetes' API server updates from
        its watch cache: when that decision is an update, the write
        transaction alone (compare the revision seen, put) does it, one
        round trip instead of two; a stale view only fails the compare.
        Anything else (a claim, a removal, a refusal, which must not be
        decided on a view that may be stale) reads first."""
        known = self._known.get(op.name)
        if attempts == 1 and known is not None and not op.tsig_key:
            revision, current = known
            change = decide_change(op, current, 0, int(time.time() * 1000))
            if change.stored is not None:
                return await self._commit(op, seq, attempts, change,
                                          [unchanged(self.layout.record_key(op.name),
                                                     {"mod_revision": str(revision)})], [])
        layout = self.layout
        record_key, session_key = layout.record_key(op.name), layout.session_key(
            self._client_id, seq)
        stamped = bool(op.tsig_key) and op.kind in ("record_set", "record_delete")
        keys = [record_key, layout.names]
        if stamped:
            keys.append(layout.tsig_key(op.tsig_key))
        if ambiguous:
            keys.append(session_key)
        answer = await self.gateway.txn([], [range_request(k) for k in keys],
                                        writes=False)
        found = [first_kv(r) for r in answer.get("responses", ())]
        if ambiguous and found[-1] is not None:
            kept = session_from(unb64(found[-1]["value"]))  # an earlier attempt was applied
            return Finished(op, kept["status"], kept["value"], attempts, outcome=kept["outcome"],
                            serial=_revision(answer))
        current = record_from(op.name, unb64(found[0]["value"])) if found[0] else None
        zone_size = int(unb64(found[1]["value"])) if found[1] else 0
        compares = [unchanged(record_key, found[0])]
        writes: list[dict[str, Any]] = []
        if stamped:
            tsig_key = layout.tsig_key(op.tsig_key)
            last = signed_from(unb64(found[2]["value"])) if found[2] else None
            signed = accept_signed(last, op)
            if signed is None:
                change = replayed(op)
                return Finished(op, change.status, change.reason, attempts)
            compares.append(unchanged(tsig_key, found[2]))
            writes.append(put_request(tsig_key, signed_value(signed)))
        change = decide_change(op, current, zone_size, int(time.time() * 1000))
        grows = (change.stored is not None and current is None) - change.removed
        if grows:
            compares.append(unchanged(layout.names, found[1]))
            writes.append(put_request(layout.names, str(zone_size + grows)))
        if not writes and change.stored is None and not change.removed:
            return Finished(op, change.status, change.reason, attempts, outcome=change.outcome,
                            serial=_revision(answer))
        return await self._commit(op, seq, attempts, change, compares, writes)

    async def _commit(self, op: RecordOp, seq: int, attempts: int, change: Change,
                      compares: list[dict[str, Any]],
                      writes: list[dict[str, Any]]) -> Finished | None:
        """The write transaction of ``change`` (its record's put or delete
        is added here; ``writes`` holds the rest) with the request's
        session key; None when a comparison failed."""
        record_key = self.layout.record_key(op.name)
        if change.stored is not None:
            writes = [put_request(record_key, record_value(change.stored)), *writes]
        elif change.removed:
            writes = [{"request_delete_range": {"key": b64(record_key)}}, *writes]
        writes.append(put_request(self.layout.session_key(self._client_id, seq),
                                  session_value(change.status, change.reason, change.outcome),
                                  await self._lease_id()))
        result = await self.gateway.txn(compares, writes)
        if not result.get("succeeded"):
            self._known.pop(op.name, None)  # what we had is stale: read it next time
            return None
        revision = _revision(result)
        if change.stored is not None:
            self._known[op.name] = revision, change.stored
        elif change.removed:
            self._known.pop(op.name, None)
        return Finished(op, change.status, change.reason, attempts, outcome=change.outcome,
                        serial=revision)

    async def _lease_id(self) -> int:
        """The lease session keys go on, renewed by granting a new one every
        LEASE_RENEW_S (the old one lapses by itself)."""
        now = time.monotonic()
        if self._lease is None or now - self._lease[1] > LEASE_RENEW_S:
            self._lease = (await self.gateway.lease_grant(SESSION_TTL_S), now)
        return self._lease[0]

    async def _back_off(self, attempts: int) -> None:
        low, high = RETRY_BACKOFF_S
        await asyncio.sleep(self._rng.uniform(low, min(high, low * 2 ** attempts)))

    # --- the watch that feeds a front end's copy -----------------------------------------

    async def _changes(self, op: RecordOp) -> Finished:
        """``record_changes``: the records changed after revision
        ``op.since``, or a page of the full listing (see RecordOp)."""
        try:
            if op.name:
                return await self._page(op, op.name, op.since)
            if op.since == 0 or self._compacted:
                self._stop_stream()
                self._compacted = False
                return await self._page(op, "", 0)
        except (EtcdUnavailable, EtcdError) as exc:
            # Unreachable, or compacted past the pages' revision: the caller
            # starts over, after a pause so a cluster that is down is not hammered.
            await asyncio.sleep(WATCH_HOLD_S)
            return Finished(op, Status.RETRY, str(exc), 1)
        self._watch_from(op.since + 1)
        while self._events and self._events[0][0] <= op.since:
            self._events.popleft()
        if not self._events and not self._compacted:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), WATCH_HOLD_S)
            except asyncio.TimeoutError:
                pass
        if self._compacted:
            return await self._changes(op)
        changed: dict[str, Record] = {}
        serial = op.since
        for revision, record in self._events:
            changed.pop(record.name, None)
            changed[record.name] = record
            serial = revision
        return Finished(op, Status.OK, "", 1, records=tuple(changed.values()), serial=serial)

    async def _page(self, op: RecordOp, after: str, revision: int) -> Finished:
        start = self.layout.record_key(after) + "\0" if after else self.layout.records
        answer = await self.gateway.range(start, prefix_end(self.layout.records),
                                          limit=FULL_PAGE, revision=revision)
        return Finished(op, Status.OK, "", 1, records=self._records_of(answer),
                        serial=revision or _revision(answer), full=True,
                        more=bool(answer.get("more")))

    def _watch_from(self, start: int) -> None:
        """Make sure a watch runs that has every change from ``start`` on."""
        if self._stream is not None and not self._stream.done() and self._stream_from <= start:
            return
        self._stop_stream()
        self._stream_from = start
        self._stream = asyncio.ensure_future(self._follow(start))

    def _stop_stream(self) -> None:
        if self._stream is not None:
            self._stream.cancel()
        self._stream = None
        self._events.clear()

    async def _follow(self, start: int) -> None:
        records, end = self.layout.records, prefix_end(self.layout.records)
        try:
            async for result in self.gateway.watch(records, end, start):
                if int(result.get("compact_revision", 0)) > 0 or result.get("canceled"):
                    self._compacted = True
                    self._arrived.set()
                    return
                for event in result.get("events", ()):
                    kv = event["kv"]
                    name = self.layout.name_of(unb64(kv["key"]).decode())
                    revision = int(kv["mod_revision"])
                    if event.get("type") == "DELETE":
                        record = Record(name)
                        self._known.pop(name, None)
                    else:
                        try:
                            record = record_from(name, unb64(kv["value"]))
                        except BadValue:
                            continue  # not ours: never let a stray key stop the watch
                        self._known[name] = revision, record
                    self._events.append((revision, record))
                if len(self._events) > MAX_BUFFERED_EVENTS:
                    self._compacted = True  # nobody is taking them: reload instead
                if self._events:
                    self._arrived.set()
        except EtcdUnavailable:
            # The next record_changes, after its hold (so a cluster that is
            # down is not hammered), resumes from what its copy has.
            pass

    def _records_of(self, answer: dict[str, Any]) -> tuple[Record, ...]:
        """The records a range answered (and what this store now knows of them)."""
        records = []
        for kv in answer.get("kvs", ()):
            try:
                name = self.layout.name_of(unb64(kv["key"]).decode())
                record = record_from(name, unb64(kv["value"]))
            except (BadValue, UnicodeDecodeError):
                continue
            self._known[name] = int(kv.get("mod_revision", 0)), record
            records.append(record)
        return tuple(records)


def _revision(answer: dict[str, Any]) -> int:
    return int(answer.get("header", {}).get("revision", 0))
