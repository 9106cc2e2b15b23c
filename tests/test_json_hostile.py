"""Hostile JSON requests, as :mod:`tests.test_malformed` is for DNS:
:meth:`JsonFrontEnd.handle` answers every datagram (a reply, or the
deliberate drop of an untrusted Stats), never lets an exception out, never
replies with more than ``max(len(request), MAX_SMALL_REPLY_BYTES)`` bytes,
and a refused request changes nothing in the store.

The store is a stand-in for the cluster (:class:`EncodingStore`): the real
state machine behind the real codec, so an operation msgpack cannot carry
fails here as it does in a clerk. The clerk pool itself is tested over a
real pipe with nobody answering, and one lab test sends the datagrams for
real. The random part is seeded; a failure prints its seed and the command
that replays it (``MYDNS_FUZZ_SEED=<n>`` runs that seed alone).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import random
from typing import Any

import pytest

from mydns_lab import codec
from mydns_lab.clerks import Finished
from mydns_lab.dns.wire import Zone
from mydns_lab.experiments.labprocess import LabProcess
from mydns_lab.net.cluster_client import MAX_IDLE_CLERKS, ClusterClient, ClusterTimeout
from mydns_lab.protocol import ClientRequest, Command, RecordOp, Status, StoreOp
from mydns_lab.raftkv import WRITE_KINDS, KVStateMachine
from mydns_lab.records import MAX_SEQ, InvalidRecord, checked_op, normalize_name
from mydns_lab.net.jsonwire import MAX_ID_CHARS, MAX_SMALL_REPLY_BYTES
from mydns_lab.service.jsonfront import JsonFrontEnd
from mydns_lab.service.settings import FrontEndCounters

CLIENT = 1001
STRANGER = "192.0.2.7"   # TEST-NET-1: a source on nobody's trusted list
CODES = {"bad_request", "invalid", "owned", "stale", "nospace", "unavailable", "too_large", "open",
         "zone_full", "reserved", "rate_limited", "token_required", "bad_signature",
         "unknown_name"}
REPLAY = "MYDNS_FUZZ_SEED={seed} .venv/bin/python -m pytest tests/test_json_hostile.py -k mutations"


class EncodingStore:
    """A ClusterClient stand-in: each operation is encoded as a clerk sends
    it, then run on a real :class:`KVStateMachine` (writes applied, reads
    answered)."""

    def __init__(self) -> None:
        self.machine = KVStateMachine(codec)
        self._seq = 0

    async def call(self, op: StoreOp, timeout_s: float) -> Finished:
        self._seq += 1
        codec.encode(ClientRequest(CLIENT, 1, CLIENT, self._seq, op))
        if op.kind in WRITE_KINDS:
            result, _ = self.machine.apply(self._seq, Command(CLIENT, self._seq, op, 1_700_000))
        else:
            result = self.machine.query(op)
        return Finished(op, result.status, result.value, 1, result.records, result.outcome,
                        result.serial, result.full, result.more)

    def state(self) -> tuple[dict[str, Any], int]:
        return dict(self.machine.records), self.machine.serial


class Front:
    """A JsonFrontEnd on an EncodingStore holding ``laptop`` (token
    ``owner``, Seq 100), driven on one event loop."""

    def __init__(self, trusted: tuple[str, ...] | None = None) -> None:
        self.store = EncodingStore()
        extra = {} if trusted is None else {"trusted": trusted}
        self.fe = JsonFrontEnd(self.store, FrontEndCounters(), **extra)  # type: ignore[arg-type]
        self.loop = asyncio.new_event_loop()
        claimed = self.ask({"Type": "Put", "Key": "laptop", "Value": "10.0.0.1",
                            "Token": "owner", "Seq": 100})
        assert claimed["Outcome"] == "claimed", claimed

    def raw(self, data: bytes, source: str | None = STRANGER) -> bytes | None:
        """The reply bytes, checked against the size bound."""
        reply = self.loop.run_until_complete(self.fe.handle(data, source))
        if reply is not None:
            assert len(reply) <= max(len(data), MAX_SMALL_REPLY_BYTES), (len(data), reply[:200])
        return reply

    def ask(self, request: dict[str, Any] | bytes, source: str | None = STRANGER) -> dict[str, Any]:
        data = request if isinstance(request, bytes) else json.dumps(request).encode()
        reply = self.raw(data, source)
        assert reply is not None, "dropped"
        decoded = json.loads(reply)
        assert isinstance(decoded, dict) and decoded.get("Type") in (
            "Error", "PutOk", "Response", "Stats"), decoded
        if decoded["Type"] == "Error":
            assert decoded["Code"] in CODES, decoded
        return decoded

    def refused_without_change(self, data: bytes) -> dict[str, Any]:
        before = self.store.state()
        reply = self.ask(data)
        assert reply["Type"] == "Error", reply
        assert self.store.state() == before, "a refused request changed the store"
        return reply

    def close(self) -> None:
        self.loop.close()


@pytest.fixture
def front():
    fe = Front()
    yield fe
    fe.close()


# --- the corpus ---------------------------------------------------------------------------

PUT = {"Type": "Put", "Key": "victim", "Value": "10.0.0.9", "Token": "tok", "Seq": 5}


def put_with(**fields: object) -> bytes:
    return json.dumps({**PUT, **fields}).encode()


def without(field: str) -> bytes:
    return json.dumps({k: v for k, v in PUT.items() if k != field}).encode()


def text(raw: str) -> bytes:
    """JSON text as written (lone-surrogate escapes, NaN, duplicate keys...)."""
    return raw.encode()


def nested(depth: int, inner: str = "1") -> str:
    return "[" * depth + inner + "]" * depth


WRONG_TYPES = {
    "Type": [None, True, 1, 1.5, [], {}, "", "put", "Stats ", ["Put"], {"Put": 1}],
    "Key": [None, True, 1, 1.5, [], {}, ["victim"]],
    "Value": [None, True, 1, 1.5, {}, [], [1], [None], [["10.0.0.9"]], {"ip": "10.0.0.9"}],
    "Token": [True, 1, 1.5, [], {}, ["tok"], {"t": 1}],
    "Seq": [None, True, False, 1.5, "5", [], {}, [5]],
}

BAD_NAMES = ["", " ", ".", "..", "a..b", "-a", "a-", "a_b", "a b", "a\n.lab", "a\r.lab", "a\t.b",
             "a\0b", "x" * 64, "a." * 127 + "a", "victim\n.x", "ünï", "ｌａｐｔｏｐ", "\u212aey",
             "laptop\u0130", "a\u2028b", "x" * 60000]

BAD_SEQS = ["-1", "-9223372036854775808", "9223372036854775808", str(2**64), str(2**64 + 1),
            "1" + "0" * 30, "1" + "0" * 4000, "1" + "0" * 5000, "1e400", "-1e400", "NaN",
            "Infinity", "-Infinity", "5.0", "5e0", "0.5"]


def corpus() -> list[tuple[str, bytes]]:
    """Requests that must each be refused with an Error and change nothing."""
    base = json.dumps(PUT).encode()
    cases = [(f"prefix {n}", base[:n]) for n in range(len(base))]
    cases += [(f"{field}={value!r:.30}", put_with(**{field: value}))
              for field, values in WRONG_TYPES.items() for value in values]
    cases += [(f"Key={name!r:.30}", put_with(Key=name)) for name in BAD_NAMES]
    cases += [(f"Query Key={name!r:.30}", json.dumps({"Type": "Query", "Key": name}).encode())
              for name in BAD_NAMES]
    cases += [(f"Seq {raw:.30}", text(json.dumps(PUT)[:-2] + raw + "}")) for raw in BAD_SEQS]
    cases += [(f"missing {field}", without(field)) for field in ("Type", "Key", "Value")]
    cases += [("missing Key (Query)", text('{"Type":"Query"}')), ("empty object", text("{}"))]
    cases += [(f"not an object: {raw}", text(raw)) for raw in
              ("[]", '"Put"', "1", "null", "true", '[{"Type":"Put"}]', '{"Type":"Put"',
               "{'Type':'Put'}", '{"Type":"Put",}', "{}{}", '{"Type":"Put"} x')]
    cases += [  # lone surrogates, as JSON escapes and as raw UTF-8 surrogate bytes
        ("surrogate Type", text('{"Type":"\\ud800"}')),
        ("surrogate Key", text('{"Type":"Put","Key":"\\udfff","Value":"10.0.0.9"}')),
        ("surrogate Value", put_with(Value="\ud800")),
        ("surrogate in Value list", put_with(Value=["10.0.0.9", "\udc00"])),
        ("surrogate Token", put_with(Token="\ud800")),
        ("surrogate pair halves reversed", put_with(Token="\udc00\ud800")),
        ("surrogate Id, bad Seq", put_with(Id="\ud800", Seq=-1)),
        ("surrogate key name", text('{"\\ud800":1}')),
        ("raw surrogate bytes", b'{"Type":"Put","Key":"\xed\xa0\x80","Value":"10.0.0.9"}'),
        ("invalid UTF-8", b'{"Type":"Put","Key":"\xff\xfe","Value":"10.0.0.9"}'),
        ("latin-1 text", '{"Type":"Put","Key":"caf\xe9"}'.encode("latin-1")),
    ]
    cases += [  # nesting: deeper than the parser allows, and just below it
        ("deep array Value", text('{"Type":"Put","Key":"victim","Value":' + nested(100_000) + "}")),
        ("deep object", text('{"a":' * 50_000 + "1" + "}" * 50_000)),
        ("unclosed depth", text("[" * 60_000)),
    ] + [(f"Type nested {d}", text('{"Type":' + nested(d) + "}")) for d in (100, 900, 990, 999)]
    cases += [  # duplicate keys: the last one counts
        ("duplicate Seq", text(json.dumps(PUT)[:-1] + ',"Seq":-1}')),
        ("duplicate Type", text('{"Type":"Put","Type":"Nope","Key":"victim","Value":"10.0.0.9"}')),
        ("duplicate Key", text('{"Type":"Put","Key":"victim","Key":1,"Value":"10.0.0.9"}')),
        ("duplicate Token", text(json.dumps(PUT)[:-1] + ',"Token":7}')),
    ]
    cases += [  # huge strings and lists
        ("33 addresses", put_with(Value=[f"10.0.1.{i}" for i in range(33)])),
        ("9 IPv4 addresses", put_with(Value=[f"10.0.1.{i}" for i in range(9)])),
        ("9 IPv6 addresses", put_with(Value=[f"fd00::{i:x}" for i in range(1, 10)])),
        ("long Token", put_with(Token="t" * 257)),
        ("long Type and Id", put_with(Type="x" * 14_000, Id="y" * 14_000)),
        ("long bad address", put_with(Value="1" * 60_000)),
        ("padded bad address", put_with(Value="10.0.0.9 junk" + " " * 30_000)),
    ]
    return cases


CORPUS = corpus()


@pytest.mark.parametrize("data", [c[1] for c in CORPUS], ids=[c[0] for c in CORPUS])
def test_every_hostile_request_is_refused_and_changes_nothing(front: Front, data: bytes) -> None:
    front.refused_without_change(data)
    assert "victim" not in front.store.machine.records
    assert front.fe.counters.internal_errors == 0


def test_the_front_end_still_serves_after_the_whole_corpus(front: Front) -> None:
    for _, data in CORPUS:
        front.refused_without_change(data)
    assert front.ask({"Type": "Query", "Key": "laptop"})["Value"] == "10.0.0.1"
    assert front.ask(PUT)["Outcome"] == "claimed"
    counters = front.fe.counters
    assert counters.requests_received == counters.replies_sent == len(CORPUS) + 3


@pytest.mark.parametrize("request_, key", [
    ({**PUT, "Token": None}, "victim"),           # null Token: an open name
    ({**PUT, "Token": ""}, "victim"),
    ({k: v for k, v in PUT.items() if k != "Token"}, "victim"),
    ({k: v for k, v in PUT.items() if k != "Seq"}, "victim"),
    ({**PUT, "Seq": MAX_SEQ}, "victim"),
    ({**PUT, "Seq": 0}, "victim"),
    ({**PUT, "Key": " Victim. ", "Id": "\ud800"}, "victim"),
    ({**PUT, "Key": "victim\n"}, "victim"),        # surrounding whitespace is stripped
    ({**PUT, "Key": "\u00a0victim"}, "victim"),
    ({**PUT, "Token": "\u00e9\U0001f600" * 100}, "victim"),
    ({**PUT, "Pad": "x" * 1000, "Id": 2**64 - 1}, "victim"),
])
def test_odd_but_valid_requests_are_served(front: Front, request_: dict[str, Any],
                                           key: str) -> None:
    reply = front.ask(request_)
    assert reply["Type"] == "PutOk" and reply["Outcome"] == "claimed", reply
    assert front.store.machine.records[key].ipv4 == ("10.0.0.9",)


# --- seeded random mutations -------------------------------------------------------------

SEEDS = [int(os.environ["MYDNS_FUZZ_SEED"])] if "MYDNS_FUZZ_SEED" in os.environ else [1, 2, 3]
MUTATIONS_PER_SEED = 1500
ODD_VALUES = ["null", "true", "-1", "1.5", "1e400", str(2**64), "[]", "{}", '""', '"\\ud800"',
              '"\\u0000"', '"a\\nb"', nested(2000), '"' + "x" * 3000 + '"']


def mutate(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3))):
        where = rng.randrange(len(out) + 1)
        choice = rng.choice((0, 1, 2, 3, 4, 4, 4, 4, 5))
        if choice == 0 and out:          # flip a bit
            out[where % len(out)] ^= 1 << rng.randrange(8)
        elif choice == 1:                # insert a byte
            out.insert(where, rng.randrange(256))
        elif choice == 2 and out:        # delete a byte
            del out[where % len(out)]
        elif choice == 3:                # cut
            del out[where:]
        elif choice == 4:                # a field's value replaced by something odd
            colon = out.find(b":", where)
            if colon >= 0:
                end = min([i for i in (out.find(b",", colon), out.find(b"}", colon)) if i >= 0],
                          default=len(out))
                out[colon + 1:end] = rng.choice(ODD_VALUES).encode()
        else:                            # a chunk repeated
            chunk = out[where:where + rng.randrange(1, 16)]
            out[where:where] = chunk * rng.randrange(1, 4)
    return bytes(out)


@pytest.mark.parametrize("seed", SEEDS)
def test_seeded_mutations(seed: int) -> None:
    rng = random.Random(seed)
    front = Front()
    seeds = [json.dumps(PUT).encode(), put_with(Key="laptop", Token="owner", Seq=101),
             text('{"Type":"Query","Key":"laptop","Id":7}'), text('{"Type":"Stats"}'),
             put_with(Value=["10.0.0.9", "fd00::9"], Id="abc")]
    try:
        for case in range(MUTATIONS_PER_SEED):
            data = mutate(rng.choice(seeds), rng)
            before = front.store.state()
            try:
                reply = front.raw(data, rng.choice([STRANGER, "127.0.0.1"]))
                if reply is None:
                    assert json.loads(data)["Type"] == "Stats"
                    continue
                decoded = json.loads(reply)
                if decoded["Type"] == "Error":
                    assert decoded["Code"] in CODES, decoded
                    assert front.store.state() == before, "a refused request changed the store"
            except BaseException as exc:
                raise AssertionError(f"seed {seed} case {case} request {data[:300]!r}: "
                                     f"{type(exc).__name__}: {exc}\nreplay: "
                                     + REPLAY.format(seed=seed)) from exc
        assert front.fe.counters.internal_errors == 0
    finally:
        front.close()


# --- 1. a Seq the codec cannot carry; the clerk pool ----------------------------------------

def test_seq_range_is_that_of_a_signed_64_bit_integer(front: Front) -> None:
    assert front.ask(put_with(Seq=MAX_SEQ))["Type"] == "PutOk"
    for seq in (MAX_SEQ + 1, 2**64, -1):
        with pytest.raises(InvalidRecord, match="sequence number"):
            checked_op(RecordOp("record_set", "x", ipv4=("10.0.0.1",), owner="o", seq=seq))
        reply = front.ask(put_with(Key="other", Seq=seq))
        assert reply["Code"] == "bad_request" and "Seq must be an integer from 0 to" in \
            reply["Error"]


async def _quiet_client() -> tuple[ClusterClient, Any]:
    """A ClusterClient on a pipe whose other end (returned) never answers."""
    ours, theirs = multiprocessing.Pipe()
    return ClusterClient(ours, address=100, servers=(1, 2, 3)), theirs


def test_a_seq_beyond_64_bits_gets_an_error_and_takes_no_clerk() -> None:
    """The datagram of the issue: before, OverflowError escaped from the
    clerk (no reply) and the clerk stayed busy for ever."""
    async def scenario() -> None:
        client, other_end = await _quiet_client()
        fe = JsonFrontEnd(client, FrontEndCounters())
        for _ in range(50):
            reply = json.loads(await fe.handle(put_with(Seq=2**64), STRANGER))
            assert reply["Type"] == "Error" and reply["Code"] == "bad_request"
        assert (client.clerks_busy, client.clerks_idle) == (0, 0)
        other_end.close()
    asyncio.run(scenario())


def test_an_op_the_codec_cannot_carry_returns_its_clerk() -> None:
    """Defence in depth under the front end's checks: an exception while
    starting an operation frees the clerk, and the clerk works again."""
    async def scenario() -> None:
        client, other_end = await _quiet_client()
        bad = RecordOp("record_set", "x", ipv4=("10.0.0.1",), owner="o", seq=2**64)
        with pytest.raises(OverflowError):
            await client.call(bad, 1.0)
        assert (client.clerks_busy, client.clerks_idle) == (0, 1)
        with pytest.raises(ClusterTimeout):
            await client.call(RecordOp("record_get", "x"), 0.05)
        assert (client.clerks_busy, client.clerks_idle) == (0, 1)
        other_end.close()
    asyncio.run(scenario())


def test_the_idle_pool_shrinks_after_a_burst_nobody_answers() -> None:
    async def scenario() -> None:
        client, other_end = await _quiet_client()
        burst = MAX_IDLE_CLERKS + 40
        results = await asyncio.gather(
            *(client.call(RecordOp("record_get", f"n{i}"), 0.05) for i in range(burst)),
            return_exceptions=True)
        assert all(isinstance(r, ClusterTimeout) for r in results)
        assert (client.clerks_busy, client.clerks_idle) == (0, MAX_IDLE_CLERKS)
        other_end.close()
    asyncio.run(scenario())


# --- 2. a label ending in a newline -------------------------------------------------------

@pytest.mark.parametrize("name", ["a\n.lab", "a\n", "lab.a\n.x", "a\r\n.lab"])
def test_no_label_may_end_in_a_newline(front: Front, name: str) -> None:
    if name.strip() != name:
        assert normalize_name(name) == name.strip()  # surrounding whitespace is dropped
        return
    with pytest.raises(InvalidRecord):
        normalize_name(name)
    reply = front.refused_without_change(put_with(Key=name))
    assert reply["Code"] == "invalid"
    assert Zone.record_name(tuple(label.encode() for label in name.split("."))) is None


# --- 4. reflection and amplification -------------------------------------------------------

def test_a_long_type_and_id_are_not_echoed(front: Front) -> None:
    """The issue's 14 KB request drew 42 KB; now a short error, no Id."""
    data = json.dumps({"Type": "x" * 14_000, "Id": "y" * 14_000}).encode()
    reply = front.raw(data)
    assert reply is not None and len(reply) < 200
    assert "Id" not in json.loads(reply)


@pytest.mark.parametrize("request_id, echoed", [
    (7, True), (-2**63, True), (2**64 - 1, True), (2**64, False), ("a" * MAX_ID_CHARS, True),
    ("a" * (MAX_ID_CHARS + 1), False), ("\U0001F600" * (MAX_ID_CHARS // 2), True),
    ("\U0001F600" * MAX_ID_CHARS, False), (1.5, False), ([1], False), ({"a": 1}, False)])
def test_which_ids_are_echoed(front: Front, request_id: object, echoed: bool) -> None:
    reply = front.ask({"Type": "Query", "Key": "laptop", "Id": request_id})
    assert reply["Type"] == "Response"
    assert reply.get("Id", "none") == (request_id if echoed else "none")


def test_stats_answer_trusted_sources_only(front: Front) -> None:
    stats = b'{"Type":"Stats"}'
    for source in (STRANGER, "10.0.0.1", "fd00::1", "::ffff:192.0.2.7", None, "not an address"):
        assert front.raw(stats, source) is None, source
    for source in ("127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"):
        assert front.ask(stats, source)["Type"] == "Stats", source
    lan = Front(trusted=("192.0.2.0/24",))
    try:
        assert lan.ask(stats, STRANGER)["Type"] == "Stats"
        assert lan.raw(stats, "127.0.0.1") is None
    finally:
        lan.close()


def test_a_large_answer_needs_a_padded_query(front: Front) -> None:
    """A long name with the most addresses it may hold (eight of each
    family, long forms): a small Query may not draw its answer (it gets
    ``too_large``, which names the size to pad to)."""
    key = "a-host-with-many-addresses.of-both-families"
    many = ([f"192.168.200.{200 + i}" for i in range(8)]
            + [f"2001:db8:1234:5678:9abc:def0:1234:{0x1000 + i:x}" for i in range(8)])
    assert front.ask(put_with(Key=key, Value=many))["Type"] == "PutOk"
    request_id = "q" * MAX_ID_CHARS
    small = front.ask({"Type": "Query", "Key": key, "Id": request_id})
    assert small["Code"] == "too_large" and small["Id"] == request_id, small
    needed = int(small["Error"].split("pad the request to ")[1].split()[0])
    assert needed > MAX_SMALL_REPLY_BYTES
    request = {"Type": "Query", "Key": key, "Id": request_id, "Pad": ""}
    request["Pad"] = "x" * (needed - len(json.dumps(request)))
    assert front.ask(request)["Value"] == many


@pytest.mark.parametrize("ninth", ["10.0.1.9", "fd00::9"])
def test_a_ninth_address_of_a_family_is_refused_as_invalid(front: Front, ninth: str) -> None:
    """At most eight addresses of each family: a JSON Put of a ninth gets
    ``invalid`` and changes nothing, and the state machine refuses it too
    when it comes some other way (an older front end, a hand-made op)."""
    eight = [f"10.0.1.{i}" for i in range(1, 9)] + [f"fd00::{i:x}" for i in range(1, 9)]
    assert front.ask(put_with(Value=eight))["Outcome"] == "claimed"
    family = "IPv6" if ":" in ninth else "IPv4"
    before = front.store.state()
    reply = front.ask(put_with(Value=eight + [ninth], Seq=6))
    assert reply["Code"] == "invalid", reply
    assert f"9 {family} addresses given; at most 8 allowed" in reply["Error"], reply
    assert front.store.state() == before
    v4 = tuple(a for a in eight + [ninth] if ":" not in a)
    v6 = tuple(a for a in eight + [ninth] if ":" in a)
    op = RecordOp("record_set", "victim", ipv4=v4, ipv6=v6, owner="o", seq=7)
    finished = front.loop.run_until_complete(front.store.call(op, 1.0))
    assert finished.status == Status.ERROR and f"9 {family} addresses" in finished.value
    assert front.store.state() == before


def test_a_put_reply_is_no_larger_than_the_put(front: Front) -> None:
    """Echoed Key and Value written with non-ASCII spaces would be escaped
    to six bytes each; they are left out when the reply would outgrow the
    request, but the claim's Outcome comes back."""
    padded = {"Type": "Put", "Key": "\u00a0" * 2000 + "spaced", "Value": "10.0.0.3"}
    data = json.dumps(padded, ensure_ascii=False).encode()
    reply = front.ask(data)
    assert reply == {"Type": "PutOk", "Outcome": "claimed", "Open": True}
    assert "Key" not in reply and len(json.dumps(reply)) <= len(data)


# --- the same over UDP, against a real lab -------------------------------------------------

@pytest.mark.lab
def test_out_of_range_seqs_over_udp_each_get_an_error(tmp_path) -> None:
    with LabProcess(tmp_path / "data", nservers=3, nclerks=1, seed=3) as lab:
        for i in range(100):
            reply = lab.call(0, {"Type": "Put", "Key": f"h{i}", "Value": "10.0.0.1",
                                 "Seq": 2**64 + i}, timeout_s=2.0, attempts=1)
            assert reply["Code"] == "bad_request", reply
        stats = lab.call(0, {"Type": "Stats"})
        assert stats["RepliesSent"] == stats["RequestsReceived"] - 1  # all but this Stats
        assert lab.call(0, {"Type": "Put", "Key": "after", "Value": "10.0.0.2",
                            "Seq": 1})["Outcome"] == "claimed"
