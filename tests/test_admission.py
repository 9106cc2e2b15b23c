"""Who may add names: open names for the original's clients, expiry through
the log, the zone's size limit, names reserved for TSIG keys, the claim rate
per source, and ``--open-names deny``.

The store's rules are tested on the state machine itself, the front end's
on :class:`JsonFrontEnd` over a real state machine (no lab), and the flags
against a running service in ``test_admission_against_a_running_service``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import msgpack
import pytest

from mydns_lab import codec
from mydns_lab.__main__ import options_from
from mydns_lab.admission import (Admission, AdmissionPolicy, ClaimLimiter, Refused,
                                 TrustedSources, duration, source_prefix)
from mydns_lab.clerks import Finished
from mydns_lab.dns.tsig import KeyRing
from mydns_lab.experiments.labprocess import LabProcess, wait_for
from mydns_lab.protocol import Command, Outcome, RecordOp, Status
from mydns_lab.raftkv import KVStateMachine, Result
from mydns_lab.records import OPEN_OWNER, json_owner
from mydns_lab.net.recordcopy import RecordCache
from mydns_lab.service.jsonfront import JsonFrontEnd
from mydns_lab.service.process import admission_for
from mydns_lab.service.settings import FrontEndCounters, FrontEndSettings
from mydns_lab.records import sender_address

ALICE, BOB = json_owner("alice"), json_owner("bob")
STRANGER = "192.0.2.77"


class Store:
    """A state machine applied in log order, as one replica would."""

    def __init__(self) -> None:
        self.machine = KVStateMachine(codec)
        self.index = 0

    def __call__(self, op: RecordOp, time_ms: int = 0) -> Result:
        self.index += 1
        result, effective = self.machine.apply(self.index, Command(1, self.index, op, time_ms))
        assert effective
        return result

    def state(self) -> tuple:
        return dict(self.machine.records), self.machine.serial


def claim(name: str, owner: str, seq: int = 1, address: str = "192.0.2.1",
          max_names: int = 0) -> RecordOp:
    return RecordOp("record_set", name, ipv4=(address,), owner=owner, seq=seq,
                    max_names=max_names)


# --- the store's rules -------------------------------------------------------------------

def test_an_open_name_is_updated_by_any_open_put_and_taken_by_no_owner() -> None:
    store = Store()
    assert store(claim("gpu", OPEN_OWNER, seq=10)) == Result(Status.OK, outcome=Outcome.CLAIMED)
    assert store(claim("gpu", OPEN_OWNER, seq=11, address="192.0.2.2")).outcome == Outcome.UPDATED
    before = store.state()
    for owner in (ALICE, "tsig-owner-hash"):
        refused = store(claim("gpu", owner, seq=99))
        assert refused.status == Status.OPEN and "is open" in refused.value
    stale = store(claim("gpu", OPEN_OWNER, seq=5))
    assert stale.status == Status.STALE
    assert store.state() == before
    # ...and an open Put meets an owned name as any stranger does.
    store(claim("mine", ALICE))
    assert store(claim("mine", OPEN_OWNER, seq=50)).status == Status.OWNED


def test_the_zone_holds_at_most_max_names_and_updates_go_on_when_full() -> None:
    store = Store()
    for i in range(3):
        assert store(claim(f"h{i}", ALICE, max_names=3)).outcome == Outcome.CLAIMED
    before = store.state()
    full = store(claim("h3", BOB, max_names=3))
    assert full.status == Status.ZONE_FULL and "--max-names" in full.value
    assert store.state() == before
    assert store(claim("h0", ALICE, seq=2, max_names=3)).outcome == Outcome.UPDATED
    assert store(claim("h3", BOB, max_names=0)).outcome == Outcome.CLAIMED  # 0: no limit


def test_expiry_releases_only_names_unrefreshed_at_the_cutoff() -> None:
    store = Store()
    store(claim("old", ALICE), time_ms=1_000)
    store(claim("fresh", BOB), time_ms=5_000)
    assert store(RecordOp("record_expire", "old", older_than_ms=1_000)) == Result(Status.OK)
    released = store(RecordOp("record_expire", "old", older_than_ms=4_000))
    assert released == Result(Status.OK, outcome=Outcome.EXPIRED)
    assert "old" not in store.machine.records
    serial = store.machine.serial
    # A second front end racing the first, or a name refreshed since: nothing happens.
    assert store(RecordOp("record_expire", "old", older_than_ms=4_000)) == Result(Status.OK)
    assert store(RecordOp("record_expire", "fresh", older_than_ms=4_000)) == Result(Status.OK)
    assert store.machine.serial == serial
    # The released name is free: anyone may claim it.
    assert store(claim("old", BOB), time_ms=6_000).outcome == Outcome.CLAIMED


def test_new_fields_survive_the_codec_and_old_entries_still_decode() -> None:
    op = RecordOp("record_expire", "x", older_than_ms=123, max_names=7)
    assert codec.decode(codec.encode(op)) == op
    # An op written before the fields existed (two fewer trailing values).
    old = codec.encode(RecordOp("record_set", "x", owner=ALICE))
    trimmed = msgpack.packb(msgpack.unpackb(old)[:-2])
    assert codec.decode(trimmed) == RecordOp("record_set", "x", owner=ALICE)


# --- the front end's gate ----------------------------------------------------------------

class MachineClient:
    """A ClusterClient stand-in that applies each op to a real state
    machine at once, stamping ``now_ms``."""

    def __init__(self) -> None:
        self.store = Store()
        self.now_ms = 1_000

    async def call(self, op: RecordOp, timeout_s: float) -> Finished:
        if op.kind == "record_get":
            record = self.store.machine.records.get(op.name)
            return Finished(op, Status.OK, "", 1, (record,) if record else ())
        result = self.store(op, self.now_ms)
        return Finished(op, result.status, result.value, 1, outcome=result.outcome)


class Front:
    def __init__(self, policy: AdmissionPolicy, keys: str = "",
                 name_servers: frozenset[str] = frozenset()) -> None:
        self.client = MachineClient()
        keyring = KeyRing.parse(keys) if keys else KeyRing()

        def reserved(name: str) -> str | None:
            key = keyring.key_granting(name, "mydns.")
            return key.name if key else None
        records = self.client.store.machine.records
        admission = Admission(policy, TrustedSources(("127.0.0.0/8",)), reserved,
                              lambda name: name in records, name_servers)
        self.fe = JsonFrontEnd(self.client, FrontEndCounters(),  # type: ignore[arg-type]
                               admission=admission)

    def put(self, source: str = STRANGER, **fields: Any) -> dict[str, Any]:
        request = {"Type": "Put", "Value": "192.0.2.9", **fields}
        reply = asyncio.run(self.fe.handle(json.dumps(request).encode(), source))
        assert reply is not None
        return json.loads(reply)


def test_open_names_deny_refuses_every_put_without_a_token() -> None:
    front = Front(AdmissionPolicy(open_names="deny"))
    refused = front.put(Key="gpu")
    assert refused["Code"] == "token_required" and "put.py" in refused["Error"]
    assert front.client.store.machine.records == {}
    assert front.put(Key="gpu", Token="t")["Outcome"] == "claimed"


def test_a_name_granted_to_a_key_is_reserved_for_it() -> None:
    keys = "admin c2VjcmV0LXNlY3JldC1zZWNyZXQ= gpu1.lab *.lab\nlaptop c2VjcmV0LXNlY3JldC1zZWNyZXQ=\n"
    front = Front(AdmissionPolicy(), keys)
    for name in ("gpu1.lab", "x.lab", "laptop"):
        for token in ({"Token": "t"}, {}):
            refused = front.put(Key=name, **token)
            assert refused["Code"] == "reserved", refused
    assert front.client.store.machine.records == {}
    assert front.put(Key="lab", Token="t")["Outcome"] == "claimed"  # "*.lab" is below lab only


def test_the_zone_name_servers_are_reserved_for_no_one() -> None:
    front = Front(AdmissionPolicy(), name_servers=frozenset({"ns1", "b.ns"}))
    for name in ("ns1", "NS1", "b.ns."):
        for token in ({"Token": "t"}, {}):
            refused = front.put(Key=name, **token)
            assert refused["Code"] == "reserved", refused
            assert "is a name server of the zone" in refused["Error"], refused
    assert front.client.store.machine.records == {}
    assert front.put(Key="ns2", Token="t")["Outcome"] == "claimed"
    assert front.put(Key="ns", Token="t")["Outcome"] == "claimed"


def test_the_front_ends_reserve_the_name_servers_they_publish() -> None:
    options = options_from(["--nclerks", "3", "--ns", "ns9=192.0.2.9", "--ns", "x.mydns.=::1"])
    assert [s.name for s in options.name_servers] == ["ns9", "x"]
    settings = FrontEndSettings((1,), name_servers=options.name_servers)
    admission = admission_for(settings, RecordCache(), KeyRing())
    with pytest.raises(Refused, match="'x' is a name server"):
        admission.check_put("x", True, "192.0.2.1", 0.0)
    admission.check_put("ns1", True, "192.0.2.1", 0.0)  # not one of the --ns names
    assert [s.name for s in options_from(["--nclerks", "3"]).name_servers] == ["ns1", "ns2", "ns3"]


def test_claims_per_minute_limit_new_names_from_a_source_not_updates() -> None:
    front = Front(AdmissionPolicy(claims_per_minute=3))
    for i in range(3):
        assert front.put(Key=f"h{i}", Token="t", Seq=1)["Outcome"] == "claimed"
    limited = front.put(Key="h3", Token="t")
    assert limited["Code"] == "rate_limited" and "--claims-per-minute" in limited["Error"]
    assert "h3" not in front.client.store.machine.records


def test_only_puts_that_claim_spend_the_budget() -> None:
    """A refused claim (another owner's name, an open one) adds no name:
    it spends nothing, whatever this front end believed about the name."""
    front = Front(AdmissionPolicy(claims_per_minute=3))
    front.client.store(claim("taken", BOB))
    front.client.store(claim("shared", OPEN_OWNER))
    front.fe._admission._known = lambda name: False  # a copy that lags the store
    assert front.put(Key="taken", Token="t")["Code"] == "owned"
    assert front.put(Key="shared", Token="t")["Code"] == "open"
    for name in ("n1", "n2", "n3"):
        assert front.put(Key=name, Token="t")["Outcome"] == "claimed"
    assert front.put(Key="n4", Token="t")["Code"] == "rate_limited"
    # An update of a stored name is no claim, though the copy has not seen
    # the name yet; other sources and trusted ones have their own budget.
    assert front.put(Key="n1", Token="t")["Outcome"] == "updated"
    assert front.put(source="198.51.100.1", Key="h4", Token="t")["Outcome"] == "claimed"
    assert front.put(source="127.0.0.1", Key="h5", Token="t")["Outcome"] == "claimed"


def test_puts_refused_as_not_the_owners_are_limited_per_source() -> None:
    """A token a person chose (a router's dyndns2 password) can be guessed:
    after --claims-per-minute wrong ones a source gets ``rate_limited`` for
    every Put, before anything reaches the cluster; trusted ones never."""
    front = Front(AdmissionPolicy(claims_per_minute=2))
    front.client.store(claim("router", BOB))
    front.client.store(claim("mine", json_owner("t")))
    assert [front.put(Key="router", Token=guess)["Code"] for guess in ("a", "b")] == \
        ["owned", "owned"]
    before = front.client.store.state()
    limited = front.put(Key="router", Token="bob")
    assert limited["Code"] == "rate_limited" and "not the name owner's" in limited["Error"]
    assert front.put(Key="mine", Token="t")["Code"] == "rate_limited", "every Put of that source"
    assert front.client.store.state() == before and front.client.store.index == 2 + 2
    assert front.put(source="198.51.100.1", Key="mine", Token="t")["Outcome"] == "updated"
    for guess in ("c", "d", "e"):
        assert front.put(source="127.0.0.1", Key="router", Token=guess)["Code"] == "owned"


def claims(limiter: ClaimLimiter, key: str, now_s: float, tries: int) -> list[bool]:
    """Try ``tries`` claims; each allowed one is spent, as a Put that claims."""
    results = []
    for _ in range(tries):
        results.append(limiter.allow(key, now_s))
        if results[-1]:
            limiter.spend(key, now_s)
    return results


def test_the_claim_budget_refills_at_the_rate_and_counts_ipv6_by_64() -> None:
    limiter = ClaimLimiter(per_minute=2)
    assert claims(limiter, "a", 0.0, 3) == [True, True, False]
    assert not limiter.allow("a", 29.0)          # 0.97 of a claim back
    assert limiter.allow("a", 31.0)              # one claim back after 30 s
    assert limiter.allow("b", 31.0)
    assert [limiter.allow("c", 0.0) for _ in range(5)] == [True] * 5, "asking spends nothing"
    assert source_prefix("2001:db8:1:2:aaaa::1") == source_prefix("2001:db8:1:2:bbbb::9")
    assert source_prefix("2001:db8:1:2:aaaa::1") != source_prefix("2001:db8:1:3::1")
    assert source_prefix("::ffff:192.0.2.7") == "192.0.2.7"
    assert ClaimLimiter(per_minute=0).allow("a", 0.0)


def test_the_claim_limiter_forgets_the_oldest_source_beyond_its_bound() -> None:
    limiter = ClaimLimiter(per_minute=1, max_sources=2)
    for key in "abc":
        assert claims(limiter, key, 0.0, 2) == [True, False]
    assert not limiter.allow("c", 0.0) and not limiter.allow("b", 0.0)
    assert limiter.allow("a", 0.0), "a was forgotten when c came: it starts again"


@pytest.mark.parametrize("text, seconds", [("30d", 30 * 86400.0), ("12h", 43200.0),
                                           ("15m", 900.0), ("90s", 90.0), ("5", 5.0),
                                           ("0", 0.0), ("1.5h", 5400.0), (" 2D ", 172800.0)])
def test_durations(text: str, seconds: float) -> None:
    assert duration(text) == seconds


@pytest.mark.parametrize("text", ["", "d", "-1d", "3w", "1e9d", "nan", "5 s s"])
def test_bad_durations_say_what_is_expected(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="duration"):
        duration(text)


def test_the_flags_reach_the_front_ends() -> None:
    options = options_from(["--expire", "5s", "--claims-per-minute", "0", "--max-names", "10",
                            "--open-names", "deny", "--rrl", "0"])
    assert options.admission == AdmissionPolicy(5.0, 0, 10, "deny")
    assert options.rrl == 0
    assert options_from([]).admission == AdmissionPolicy()


# --- against a running service -----------------------------------------------------------

EXPIRE_S = 5.0
VISIBLE_WITHIN_S = 30.0


@pytest.mark.lab
def test_admission_against_a_running_service(tmp_path) -> None:
    """``--trusted`` leaves loopback out, so the claim rate applies to this
    test's own Puts; ``--expire 5s`` releases a name not refreshed, through
    the log, and another owner claims it, while a refreshed one stays."""
    with LabProcess(tmp_path / "data", "--expire", f"{EXPIRE_S:g}s", "--claims-per-minute", "4",
                    "--trusted", "10.255.255.255/32", nservers=3, nclerks=2, seed=11) as lab:
        def put(i: int, key: str, token: str, **fields: Any) -> dict[str, Any]:
            return lab.call(i, {"Type": "Put", "Key": key, "Value": "10.1.0.1", "Token": token,
                                **fields}, attempts=1)

        def stored(key: str) -> str:
            return lab.call(1, {"Type": "Query", "Key": key})["Value"]

        # Four claims a minute at front end 0; six tries can only get more
        # through if they take more than a minute.
        replies = [put(0, f"c{i}", "carol") for i in range(6)]
        replies += [put(0, f"c{i}", "carol", Seq=time.time_ns()) for i in range(2)]  # updates
        limited = [f"c{i}" for i, r in enumerate(replies) if r.get("Code") == "rate_limited"]
        assert limited and all(r["Outcome"] == "claimed" for r in replies[:4]), replies
        assert [r["Outcome"] for r in replies[6:]] == ["updated"] * 2, "an update is no claim"
        assert all(stored(name) == "" for name in limited), "a refused claim was stored"

        assert put(1, "left", "alice")["Outcome"] == "claimed"
        assert put(1, "kept", "alice", Seq=1)["Outcome"] == "claimed"
        assert put(1, "left", "bob")["Code"] == "owned"

        def released_while_kept_is_refreshed() -> bool:
            put(1, "kept", "alice", Seq=time.time_ns())
            return stored("left") == ""
        wait_for(released_while_kept_is_refreshed, EXPIRE_S + VISIBLE_WITHIN_S,
                 f"'left' to expire ({lab.replay})")
        again = put(1, "left", "bob")
        assert again.get("Outcome") == "claimed", f"a released name is free: {again}"
        assert stored("kept") == "10.1.0.1"


@pytest.mark.parametrize("source, expected", [
    ("192.0.2.7", "192.0.2.7"),
    ("::ffff:192.0.2.7", "192.0.2.7"),  # a dual-stack socket's view of an IPv4 sender
    ("2001:db8::1", "2001:db8::1"),
    ("not an address", None),
    ("", None),
])
def test_sender_address_unwraps_ipv4_mapped(source: str, expected: str | None) -> None:
    address = sender_address(source)
    assert (None if address is None else str(address)) == expected


def test_trusted_sources_remember_verdicts_within_a_bound() -> None:
    trusted = TrustedSources(("10.0.0.0/8", "::1/128"))
    senders = [f"10.{i >> 8 & 255}.{i & 255}.1" for i in range(TrustedSources.REMEMBERED + 50)]
    assert all(sender in trusted for sender in senders)
    assert "192.0.2.1" not in trusted and "192.0.2.1" not in trusted  # asked twice: same verdict
    assert "::ffff:10.1.2.3" in trusted and "::1" in trusted
    assert None not in trusted and "not an address" not in trusted and 7 not in trusted
    assert len(trusted._verdicts) <= TrustedSources.REMEMBERED
