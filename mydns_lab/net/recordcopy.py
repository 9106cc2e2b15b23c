"""A front end's copy of the committed records, kept current by a watch on
the leader, and the releases of names not refreshed within ``--expire``.

DNS answers from this copy in the default ``cache`` mode; the JSON front
end asks it whether a Put claims a new name.
"""

from __future__ import annotations

import asyncio
import time
from typing import Iterator

from ..clerks import Finished
from ..protocol import Record, RecordOp, Status
from .cluster_client import ClusterTimeout, RecordStore

WATCH_TIMEOUT_S = 1.0
EXPIRE_TIMEOUT_S = 3.0
EXPIRY_GRACE_S = 3600.0
EXPIRY_BATCH = 1000


class RecordCache:
    """This front end's copy of the committed records (a RecordView).

    Fed only by :meth:`apply` and :meth:`replace`, with the leader's answers
    to watches. Until the first answer has been taken it is not ``loaded``: it
    holds nothing yet, and DNS must not answer from it (an empty copy would
    deny names that exist, and resolvers cache such denials).
    """

    def __init__(self) -> None:
        self.serial = 0
        self.loaded = False
        self.heard_at = float("-inf")  # time.monotonic() of the last watch answer or page
        self._records: dict[str, Record] = {}
        self._parents: dict[str, int] = {}  # name -> how many records lie below it

    def lookup(self, name: str) -> Record | None:
        return self._records.get(name)

    def has_descendants(self, name: str) -> bool:
        return self._parents.get(name, 0) > 0

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[Record]:
        """Every record, in no order, read-only (the status page's listing);
        finish iterating before the next await, as the copy may change then."""
        return iter(self._records.values())

    def not_refreshed_since(self, cutoff_ms: int, limit: int) -> list[str]:
        """Up to ``limit`` names last changed before ``cutoff_ms``."""
        found = []
        for record in self._records.values():
            if record.updated_ms < cutoff_ms:
                found.append(record.name)
                if len(found) >= limit:
                    break
        return found

    def apply(self, records: tuple[Record, ...], serial: int, full: bool) -> None:
        """Take a watch answer at once: ``full`` replaces everything, else
        the named records change (no owner: deleted); ``serial`` is where
        the next watch resumes. Any answer to a watch from serial 0 is the
        whole store, so after the first one the cache is ``loaded``."""
        if full:
            self._records, self._parents = {}, {}
        for record in records:
            self._forget(record.name)
            if record.owner:
                self._add(record)
        self.serial = serial
        self.loaded = True

    def replace(self, fresh: RecordCache, serial: int) -> None:
        """Take ``fresh``'s records as of ``serial`` whole (a full listing
        that was gathered beside this copy)."""
        self._records, self._parents = fresh._records, fresh._parents
        self.serial = serial
        self.loaded = True

    def _add(self, record: Record) -> None:
        self._records[record.name] = record
        for parent in _parents_of(record.name):
            self._parents[parent] = self._parents.get(parent, 0) + 1

    def _forget(self, name: str) -> None:
        if self._records.pop(name, None) is not None:
            for parent in _parents_of(name):
                self._parents[parent] -= 1


def _parents_of(name: str) -> list[str]:
    labels = name.split(".")
    return [".".join(labels[i:]) for i in range(1, len(labels))]


async def watch_records(client: RecordStore, cache: RecordCache) -> None:
    """Keep ``cache`` current: each answer names the serial to ask from next."""
    while not client.closed.is_set():
        try:
            finished = await client.call(RecordOp("record_changes", since=cache.serial),
                                         WATCH_TIMEOUT_S)
            if finished.status != Status.OK:
                continue
            cache.heard_at = time.monotonic()
            if finished.full:
                await load_full_listing(client, cache, finished)
            else:
                cache.apply(finished.records, finished.serial, full=False)
        except ClusterTimeout:
            continue  # no quorum: keep answering from what we have


async def load_full_listing(client: RecordStore, cache: RecordCache, first: Finished) -> None:
    """Gather a full listing page by page beside ``cache`` and swap it in
    whole at the end, so DNS answers from a complete copy (or SERVFAIL,
    before the first) while a large store loads, and no page is large
    enough to stall the loop. The copy is as of the first page's serial:
    the next watch asks for the changes since, which covers whatever moved
    while the pages came. A page that does not come starts it over."""
    fresh = RecordCache()
    page = first
    while True:
        fresh.apply(page.records, first.serial, full=False)
        if not page.more or not page.records:
            break
        page = await client.call(RecordOp("record_changes", since=first.serial,
                                          name=page.records[-1].name), WATCH_TIMEOUT_S)
        if page.status != Status.OK or not page.full:
            return
        cache.heard_at = time.monotonic()
    cache.replace(fresh, first.serial)


async def expire_records(client: RecordStore, cache: RecordCache, expire_s: float) -> None:
    """Release, through the log, every name not refreshed within
    ``expire_s`` (``--expire``). Every front end does it: the store releases
    a name only if it is still unrefreshed at the cutoff, so they cannot
    disagree, and one front end down leaves the others to do it; a name the
    watch shows released (or refreshed) meanwhile is skipped, so most
    releases take one log entry, not one per front end.

    Nothing expires in the first ``min(expire_s, EXPIRY_GRACE_S)`` after
    the front end starts: a service that was down for longer than
    ``--expire`` gives its clients that long to refresh before it releases
    their names. At most EXPIRY_BATCH names a round, so a mass expiry never
    floods the log."""
    grace_s = min(expire_s, EXPIRY_GRACE_S)
    interval_s = min(max(expire_s / 5, 1.0), 60.0)
    started = time.monotonic()
    while not client.closed.is_set():
        try:
            await asyncio.wait_for(client.closed.wait(), interval_s)
            return
        except asyncio.TimeoutError:
            pass
        if not cache.loaded or time.monotonic() - started < grace_s:
            continue
        cutoff_ms = int((time.time() - expire_s) * 1000)
        for name in cache.not_refreshed_since(cutoff_ms, EXPIRY_BATCH):
            record = cache.lookup(name)
            if record is None or record.updated_ms >= cutoff_ms:
                continue  # released by another front end meanwhile, or refreshed: no entry
            try:
                await client.call(RecordOp("record_expire", name, older_than_ms=cutoff_ms),
                                  EXPIRE_TIMEOUT_S)
            except ClusterTimeout:
                break  # no quorum: try again next round
