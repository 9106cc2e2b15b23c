"""Every record rule, against both stores: the embedded store's state
machine (the rules as the Raft log applies them) and the etcd store on a
real three-member etcd (the rules as transactions apply them). One suite,
so the two cannot drift; then what only etcd can get wrong: races between
front ends, a retried write applied once, a watch that resumes or reloads.

Replay one store's half: ``pytest tests/test_store_rules.py -k etcd``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import urllib.request
from typing import Any, Awaitable, Callable

import pytest

from mydns_lab import codec
from mydns_lab.clerks import Finished
from mydns_lab.etcd.gateway import b64, unb64
from mydns_lab.etcd.options import EtcdOptions
from mydns_lab.etcd.store import EtcdStore
from mydns_lab.experiments.etcdprocess import MACHINES, EtcdCluster, etcd_binary
from mydns_lab.experiments.labprocess import free_port_range
from mydns_lab.protocol import Command, Outcome, RecordOp, Status
from mydns_lab.raftkv import KVStateMachine
from mydns_lab.records import OPEN_OWNER

A, B = "a" * 64, "b" * 64
_prefixes = itertools.count()


class EmbeddedStore:
    """The embedded store's state machine behind the store interface: each
    write is the next log entry, each read a query of the applied state."""

    def __init__(self) -> None:
        self.machine = KVStateMachine(codec)
        self._index = 0

    async def call(self, op: RecordOp, timeout_s: float = 2.0) -> Finished:
        if op.kind in ("record_get", "record_list", "record_changes"):
            result = self.machine.query(op)
        else:
            self._index += 1
            result, _ = self.machine.apply(self._index, Command(1, self._index, op,
                                                                int(time.time() * 1000)))
        return Finished(op, result.status, result.value, 1, result.records, result.outcome,
                        result.serial, result.full, result.more)

    async def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Any:
    if etcd_binary() is None:
        pytest.skip("etcd is not installed: install Debian's etcd-server "
                    "(apt-get install etcd-server; run_tests.sh does it as root)")
    with EtcdCluster(tmp_path_factory.mktemp("etcd"), client_port=free_port_range(2, 31000, MACHINES)) as c:
        yield c


@pytest.fixture(params=["embedded", "etcd"])
def run(request: pytest.FixtureRequest) -> Callable[[Callable[[Any], Awaitable[None]]], None]:
    """Runs a scenario ``async def (store)`` on a fresh, empty store."""
    endpoints = request.getfixturevalue("etcd").endpoints if request.param == "etcd" else None

    def runner(scenario: Callable[[Any], Awaitable[None]]) -> None:
        async def main() -> None:
            store = (EtcdStore(EtcdOptions(tuple(endpoints.split(",")),
                                           f"/test{next(_prefixes)}/"))
                     if endpoints else EmbeddedStore())
            try:
                await scenario(store)
            finally:
                await store.close()
        asyncio.run(main())
    return runner


def put(name: str, owner: str, seq: int = 1, ip: str = "10.0.0.1", **more: Any) -> RecordOp:
    return RecordOp("record_set", name, ipv4=(ip,), owner=owner, seq=seq, **more)


async def stored(store: Any, name: str) -> tuple[str, ...] | None:
    found = await store.call(RecordOp("record_get", name), 2.0)
    assert found.status == Status.OK
    return found.records[0].ipv4 if found.records else None


# --- the rules, on both stores ----------------------------------------------------------

def test_first_claim_then_only_its_owner(run: Any) -> None:
    async def scenario(store: Any) -> None:
        first = await store.call(put("laptop", A), 2.0)
        assert (first.status, first.outcome) == (Status.OK, Outcome.CLAIMED)
        other = await store.call(put("laptop", B, seq=9, ip="10.6.6.6"), 2.0)
        assert other.status == Status.OWNED and "owned by another" in other.value
        assert await stored(store, "laptop") == ("10.0.0.1",)
        mine = await store.call(put("laptop", A, seq=2, ip="10.0.0.2"), 2.0)
        assert (mine.status, mine.outcome) == (Status.OK, Outcome.UPDATED)
        assert await stored(store, "laptop") == ("10.0.0.2",)
    run(scenario)


def test_sequence_numbers_never_go_back(run: Any) -> None:
    async def scenario(store: Any) -> None:
        await store.call(put("pc", A, seq=5), 2.0)
        older = await store.call(put("pc", A, seq=4, ip="10.0.0.4"), 2.0)
        assert older.status == Status.STALE
        same = await store.call(put("pc", A, seq=5, ip="10.0.0.5"), 2.0)
        assert same.status == Status.OK  # an equal Seq is a repeat of the newest: taken
        assert await stored(store, "pc") == ("10.0.0.5",)
    run(scenario)


def test_open_names(run: Any) -> None:
    async def scenario(store: Any) -> None:
        assert (await store.call(put("gpu", OPEN_OWNER), 2.0)).outcome == Outcome.CLAIMED
        moved = await store.call(put("gpu", OPEN_OWNER, seq=2, ip="10.0.0.9"), 2.0)
        assert moved.outcome == Outcome.UPDATED
        taken = await store.call(put("gpu", A, seq=3), 2.0)
        assert taken.status == Status.OPEN
        assert await stored(store, "gpu") == ("10.0.0.9",)
    run(scenario)


def test_delete_by_the_owner_only(run: Any) -> None:
    async def scenario(store: Any) -> None:
        await store.call(put("box", A), 2.0)
        assert (await store.call(RecordOp("record_delete", "box", owner=B), 2.0)).status \
            == Status.OWNED
        gone = await store.call(RecordOp("record_delete", "box", owner=A), 2.0)
        assert (gone.status, gone.outcome) == (Status.OK, Outcome.DELETED)
        assert await stored(store, "box") is None
        again = await store.call(RecordOp("record_delete", "box", owner=A), 2.0)
        assert again.status == Status.ERROR and "no such name" in again.value
        # Free again: anyone may claim it.
        assert (await store.call(put("box", B), 2.0)).outcome == Outcome.CLAIMED
    run(scenario)


def test_expiry_releases_only_names_still_unrefreshed(run: Any) -> None:
    async def scenario(store: Any) -> None:
        await store.call(put("old", A), 2.0)
        await store.call(put("fresh", A), 2.0)
        future = int(time.time() * 1000) + 60_000
        released = await store.call(RecordOp("record_expire", "old", older_than_ms=future), 2.0)
        assert (released.status, released.outcome) == (Status.OK, Outcome.EXPIRED)
        kept = await store.call(RecordOp("record_expire", "fresh", older_than_ms=1), 2.0)
        assert (kept.status, kept.outcome) == (Status.OK, Outcome.NONE)
        assert await stored(store, "old") is None
        assert await stored(store, "fresh") == ("10.0.0.1",)
        assert (await store.call(put("old", B), 2.0)).outcome == Outcome.CLAIMED
    run(scenario)


def test_zone_size_limit(run: Any) -> None:
    async def scenario(store: Any) -> None:
        for name in ("n1", "n2"):
            assert (await store.call(put(name, A, max_names=2), 2.0)).status == Status.OK
        full = await store.call(put("n3", A, max_names=2), 2.0)
        assert full.status == Status.ZONE_FULL
        assert (await store.call(put("n1", A, seq=2, max_names=2), 2.0)).status == Status.OK
        await store.call(RecordOp("record_delete", "n2", owner=A), 2.0)
        assert (await store.call(put("n3", A, max_names=2), 2.0)).outcome == Outcome.CLAIMED
    run(scenario)


def test_tsig_replays_refused(run: Any) -> None:
    def signed(name: str, at: int, mac: str, part: int = 0, owner: str = A) -> RecordOp:
        return put(name, owner, tsig_key="k1.", tsig_time=at, tsig_mac=mac, tsig_part=part)

    async def scenario(store: Any) -> None:
        assert (await store.call(signed("h1", 100, "m1"), 2.0)).status == Status.OK
        assert (await store.call(signed("h2", 100, "m1", part=1), 2.0)).status == Status.OK
        assert (await store.call(signed("h1", 100, "m1"), 2.0)).status == Status.REPLAYED
        assert (await store.call(signed("h3", 99, "m0"), 2.0)).status == Status.REPLAYED
        assert (await store.call(signed("h3", 100, "m2"), 2.0)).status == Status.OK
        # An authentic message refused for another reason still uses up its time.
        refused = await store.call(signed("h1", 200, "m3", owner=B), 2.0)
        assert refused.status == Status.OWNED
        assert (await store.call(signed("h1", 200, "m3"), 2.0)).status == Status.REPLAYED
        assert await stored(store, "h3") == ("10.0.0.1",)
    run(scenario)


def test_invalid_changes_are_refused_with_a_reason(run: Any) -> None:
    async def scenario(store: Any) -> None:
        bad = await store.call(RecordOp("record_set", "x", ipv4=("300.1.1.1",), owner=A), 2.0)
        assert bad.status == Status.ERROR and "300.1.1.1" in bad.value
        nobody = await store.call(RecordOp("record_set", "x", ipv4=("10.0.0.1",)), 2.0)
        assert nobody.status == Status.ERROR and "token" in nobody.value
        assert await stored(store, "x") is None
    run(scenario)


def test_a_watch_sees_changes_after_its_serial(run: Any) -> None:
    async def scenario(store: Any) -> None:
        await store.call(put("w1", A), 2.0)
        # From serial 0 any answer is the whole store (a full listing, or
        # every change since the start, which is the same here).
        listing = await store.call(RecordOp("record_changes", since=0), 2.0)
        assert [r.name for r in listing.records] == ["w1"]
        await store.call(put("w2", A), 2.0)
        await store.call(RecordOp("record_delete", "w1", owner=A), 2.0)
        changed = await store.call(RecordOp("record_changes", since=listing.serial), 2.0)
        assert not changed.full and changed.serial > listing.serial
        assert {r.name: bool(r.owner) for r in changed.records} == {"w2": True, "w1": False}
    run(scenario)


# --- what only the etcd store can get wrong ---------------------------------------------

def _etcd_store(etcd: EtcdCluster, prefix: str | None = None) -> EtcdStore:
    """A store on a fresh prefix of its own, or on ``prefix`` (front ends of one zone)."""
    return EtcdStore(EtcdOptions(tuple(etcd.endpoints.split(",")),
                                 prefix or f"/test{next(_prefixes)}/"))


def test_racing_claims_one_winner(etcd: EtcdCluster) -> None:
    """Twenty front ends claim one name at once, and twenty names race for
    a zone of five: the transactions let exactly one, and exactly five, in."""
    async def main() -> None:
        prefix = f"/test{next(_prefixes)}/"
        stores = [_etcd_store(etcd, prefix) for _ in range(20)]
        try:
            owners = [f"{i:064x}" for i in range(20)]
            answers = await asyncio.gather(*(s.call(put("contested", o), 5.0)
                                             for s, o in zip(stores, owners)))
            assert sorted(a.status for a in answers).count(Status.OK) == 1
            assert {a.status for a in answers} == {Status.OK, Status.OWNED}
            answers = await asyncio.gather(*(s.call(put(f"n{i}", A, max_names=6), 5.0)
                                             for i, s in enumerate(stores)))
            assert [a.status for a in answers].count(Status.OK) == 5
            listing = await stores[0].call(RecordOp("record_list"), 2.0)
            assert len(listing.records) == 6
            count = await stores[0].gateway.range(stores[0].layout.names)
            assert int(unb64(count["kvs"][0]["value"])) == 6
        finally:
            for s in stores:
                await s.close()
    asyncio.run(main())


def test_a_retried_write_is_applied_once(etcd: EtcdCluster) -> None:
    """A write whose answer was lost is retried under the same session: the
    retry answers what the first attempt did (claimed; deleted), where
    running it again would say updated, or no such name."""
    async def main() -> None:
        store = _etcd_store(etcd)
        try:
            claim = put("once", A)
            first = await store._write_once(claim, 1, 1, ambiguous=False)
            retry = await store._write_once(claim, 1, 2, ambiguous=True)
            assert first is not None and retry is not None
            assert first.outcome == retry.outcome == Outcome.CLAIMED
            delete = RecordOp("record_delete", "once", owner=A)
            first = await store._write_once(delete, 2, 1, ambiguous=False)
            retry = await store._write_once(delete, 2, 2, ambiguous=True)
            assert first is not None and retry is not None
            assert (retry.status, retry.outcome) == (Status.OK, Outcome.DELETED)
        finally:
            await store.close()
    asyncio.run(main())


def test_a_watch_past_compaction_reloads(etcd: EtcdCluster) -> None:
    """When etcd has compacted past the revision a copy has, the next
    answer is the full listing, not a silent gap."""
    async def main() -> None:
        store = _etcd_store(etcd)
        try:
            await store.call(put("c1", A), 2.0)
            listing = await store.call(RecordOp("record_changes", since=0), 2.0)
            await store.call(put("c2", A), 2.0)
            latest = (await store.call(put("c3", A), 2.0)).serial
            _post(etcd.members[0].client_url + "/v3/kv/compaction", {"revision": str(latest)})
            answer = await store.call(RecordOp("record_changes", since=listing.serial), 2.0)
            if not answer.full:  # the first answer may report the compaction; the next reloads
                answer = await store.call(RecordOp("record_changes", since=listing.serial), 2.0)
            assert answer.full and {r.name for r in answer.records} == {"c1", "c2", "c3"}
        finally:
            await store.close()
    asyncio.run(main())


def test_stray_values_do_not_break_the_store(etcd: EtcdCluster) -> None:
    """A key an operator wrote by hand under the prefix is skipped by reads
    and watches, and a change to it is refused with what to do."""
    async def main() -> None:
        store = _etcd_store(etcd)
        try:
            key = store.layout.record_key("junk")
            await store.gateway.call("/v3/kv/put", {"key": b64(key), "value": b64("{not json")})
            listing = await store.call(RecordOp("record_changes", since=0), 2.0)
            assert listing.status == Status.OK and listing.records == ()
            refused = await store.call(put("junk", A), 2.0)
            assert refused.status == Status.ERROR and "etcdctl" in refused.value
        finally:
            await store.close()
    asyncio.run(main())


def _post(url: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(url, json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as answer:
        answer.read()



def test_updates_from_a_stale_view_are_decided_again(etcd: EtcdCluster) -> None:
    """A front end updates a name it has seen with one transaction (no read
    first); when another front end changed the name meanwhile, that
    transaction's compare fails and the update is decided on what etcd
    holds: here, a Seq now older than the stored one is stale."""
    async def main() -> None:
        prefix = f"/test{next(_prefixes)}/"
        mine, theirs = _etcd_store(etcd, prefix), _etcd_store(etcd, prefix)
        txns: list[int] = []
        real_txn = mine.gateway.txn

        async def counted(*args: Any, **kwargs: Any) -> dict[str, Any]:
            txns.append(1)
            return await real_txn(*args, **kwargs)
        mine.gateway.txn = counted  # type: ignore[method-assign]
        try:
            await mine.call(put("fast", A, seq=1), 2.0)
            txns.clear()
            assert (await mine.call(put("fast", A, seq=2), 2.0)).outcome == Outcome.UPDATED
            assert len(txns) == 1, "an update of a name this front end has seen reads first"
            assert (await theirs.call(put("fast", A, seq=10, ip="10.0.0.10"), 2.0)).status \
                == Status.OK
            stale = await mine.call(put("fast", A, seq=5, ip="10.0.0.5"), 2.0)
            assert stale.status == Status.STALE
            assert await stored(mine, "fast") == ("10.0.0.10",)
        finally:
            await mine.close()
            await theirs.close()
    asyncio.run(main())
