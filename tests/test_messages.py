"""Wire codec sanity: every message type of messages.py survives
encode/decode unchanged (nested Entry tuples and Snapshots included), and
bytes that are not one of our messages raise DecodeError, nothing else.
"""

from __future__ import annotations

import dataclasses
import random
import types
import typing
from typing import Any, Union

import msgpack
import pytest

from mydns_lab.codec import (BULK_BYTES, DecodeError, decode, encode, pack_envelopes,
                             unpack_envelopes)
from mydns_lab.core import messages
from mydns_lab.core.messages import (AppendEntries, AppendEntriesResponse, Entry, HardState,
                                     Heartbeat, HeartbeatResponse, InstallSnapshot, RequestVote,
                                     RequestVoteResponse, Snapshot, TermQuery, TermReport)
from mydns_lab.protocol import ClientReply, Record

ALL_BYTES = bytes(range(256))

# Hand-written examples of the Raft messages: nested entries and snapshots,
# every byte value, optional fields set and unset.
RAFT_EXAMPLES = [
    Entry(3, 7, ALL_BYTES),
    Entry(1, 1),
    HardState(4, 2, 9),
    Snapshot(12, 3, b"\x00state\xff"),
    RequestVote(5, 1, 2, 10, 4),
    RequestVote(6, 3, 1, 0, 0, pre_vote=True),
    RequestVoteResponse(5, 2, 1, True),
    RequestVoteResponse(6, 1, 3, False, pre_vote=True),
    AppendEntries(5, 1, 2, 10, 4, (Entry(5, 11, b"a"), Entry(5, 12, ALL_BYTES)), 9),
    AppendEntries(5, 1, 3, 0, 0, (), 0),
    AppendEntriesResponse(5, 2, 1, True, match_index=12),
    AppendEntriesResponse(5, 3, 1, False, rejected_index=10, conflict_term=2, conflict_index=4),
    Heartbeat(5, 1, 2, 9, read_seq=3),
    HeartbeatResponse(5, 2, 1, read_seq=3),
    TermQuery(0, 3, 1, survey=2**62 - 1),
    TermReport(7, 1, 3, survey=2**62 - 1),
    InstallSnapshot(5, 1, 3, Snapshot(12, 4, ALL_BYTES)),
]

MESSAGE_TYPES = sorted((cls for cls in vars(messages).values()
                        if isinstance(cls, type) and dataclasses.is_dataclass(cls)
                        and cls.__module__ == messages.__name__), key=lambda cls: cls.__name__)


def example_of(hint: Any, rng: random.Random) -> Any:
    """A random value of type ``hint`` (the field types messages.py uses),
    so that every type there, present and future, gets round-tripped."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return example_of(rng.choice(typing.get_args(hint)), rng)
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(example_of(args[0], rng) for _ in range(rng.randrange(4)))
        return tuple(example_of(a, rng) for a in args)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        hints = typing.get_type_hints(hint)
        return hint(*(example_of(hints[f.name], rng) for f in dataclasses.fields(hint)))
    simple = {int: lambda: rng.randrange(-2**40, 2**40), bool: lambda: rng.random() < 0.5,
              float: lambda: rng.uniform(-1e6, 1e6), str: lambda: rng.choice(["", "a", "é☃"]),
              bytes: lambda: rng.randbytes(rng.randrange(5)), type(None): lambda: None}
    assert hint in simple, f"no example generator for field type {hint!r}"
    return simple[hint]()


def test_raft_messages_round_trip_unchanged_with_nested_types() -> None:
    """decode(encode(x)) == x with the same types all the way down: the
    entries of an AppendEntries come back as a tuple of Entry, the snapshot
    of an InstallSnapshot as a Snapshot, bytes as bytes."""
    assert {type(e) for e in RAFT_EXAMPLES} >= set(typing.get_args(messages.RaftMessage))
    for example in RAFT_EXAMPLES:
        back = decode(encode(example))
        assert back == example and type(back) is type(example), example
    append = decode(encode(RAFT_EXAMPLES[8]))
    assert type(append.entries) is tuple and all(type(e) is Entry for e in append.entries)
    assert type(decode(encode(RAFT_EXAMPLES[-1])).snapshot) is Snapshot


@pytest.mark.parametrize("cls", MESSAGE_TYPES, ids=lambda cls: cls.__name__)
def test_every_type_in_messages_round_trips(cls: type) -> None:
    """Every dataclass defined in messages.py, filled with seeded random
    values of its field types, survives encode/decode unchanged."""
    for seed in range(20):
        example = example_of(cls, random.Random(seed))
        back = decode(encode(example))
        assert back == example and type(back) is cls, f"seed {seed}: {example!r} -> {back!r}"


def reference_wire(value: object) -> object:
    """The wire layout spelled out plainly: a dataclass is [type name,
    *fields], a tuple a list, anything else itself."""
    if isinstance(value, tuple):
        return [reference_wire(v) for v in value]
    if dataclasses.is_dataclass(value):
        return [type(value).__name__, *(reference_wire(getattr(value, f.name))
                                        for f in dataclasses.fields(value))]
    return value


@pytest.mark.parametrize("cls", MESSAGE_TYPES, ids=lambda cls: cls.__name__)
def test_encoding_keeps_the_wire_layout(cls: type) -> None:
    """The encoder is compiled per type for speed; its bytes must stay those
    of the plain layout, which data folders on disk are written in."""
    for seed in range(20):
        example = example_of(cls, random.Random(seed))
        assert encode(example) == msgpack.packb(reference_wire(example), use_bin_type=True), example


def test_envelopes_round_trip() -> None:
    batch = [(1, "Heartbeat", encode(RAFT_EXAMPLES[12])), (3, "AppendEntries", b"")]
    assert unpack_envelopes(pack_envelopes(batch)) == batch


@pytest.mark.parametrize("data", [
    b"",                                                 # nothing
    b"\xc1",                                             # a byte msgpack never uses
    b"\x93\x01\x02",                                     # array of 3 with 2 items
    encode(Heartbeat(1, 1, 2, 0)) + b"\x00",             # trailing bytes
    msgpack.packb(42),                                   # not a list
    msgpack.packb({"type": "Heartbeat"}),                # a dict, not our format
    msgpack.packb([]),                                   # empty list
    msgpack.packb([7, 1, 2]),                            # no type name
    msgpack.packb(["NoSuchMessage", 1]),                 # unknown type
    msgpack.packb(["Entry", 1]),                         # a required field missing
    msgpack.packb(["Entry", 1, 2, b"", 4]),              # too many fields
    msgpack.packb(["Entry", True, 2, b""]),              # a bool where an int belongs
    msgpack.packb(["Entry", 1, 2, "text"]),              # a string where bytes belong
    msgpack.packb(["AppendEntries", 5, 1, 2, 0, 0, 7, 0]),            # entries not a list
    msgpack.packb(["AppendEntries", 5, 1, 2, 0, 0, [["Nope"]], 0]),   # unknown nested type
    msgpack.packb(["InstallSnapshot", 5, 1, 2, ["Snapshot", 1, 2, b"", 3]]),  # long nested snapshot
], ids=lambda data: data[:12].hex() or "empty")
def test_garbage_raises_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(data)


def test_random_bytes_raise_decode_error_and_nothing_else() -> None:
    """Seeded random byte strings (and one-byte corruptions of real
    messages) either decode to a message or raise DecodeError."""
    for seed in range(500):
        rng = random.Random(seed)
        if seed % 2:
            data = rng.randbytes(rng.randrange(1, 40))
        else:
            good = bytearray(encode(rng.choice(RAFT_EXAMPLES)))
            good[rng.randrange(len(good))] = rng.randrange(256)
            data = bytes(good)
        try:
            decode(data)
        except DecodeError:
            pass
        except Exception as exc:
            raise AssertionError(f"seed {seed}: {data!r} raised {exc!r}; replay with "
                                 f"pytest tests/test_messages.py -k random_bytes") from exc


def test_wrongly_typed_field_raises_decode_error() -> None:
    """decode() promises DecodeError on bad input. A message whose fields
    have the wrong types is bad input: it must not reach the core, where
    ``msg.term > self.term`` raises TypeError and kills the host loop."""
    with pytest.raises(DecodeError):
        decode(msgpack.packb(["Heartbeat", "5", 1, 2, 0, 0]))


def test_nested_field_of_wrong_type_raises_decode_error() -> None:
    data = msgpack.packb(["AppendEntries", 5, 1, 2, 0, 0, [["Snapshot", 1, 1, b""]], 0])
    with pytest.raises(DecodeError):
        decode(data)


GOOD_RECORD = ["Record", "laptop", ["192.0.2.1"], [], ["hi"], "o" * 64, 3, 5]


@pytest.mark.parametrize("field, value", [
    (2, [1]), (2, [True]), (2, [["192.0.2.1"]]), (2, "192.0.2.1"), (2, None), (3, [b"::1"]),
    (4, ["ok", 7]), (5, 5), (6, True), (7, 1.5), (1, None)],
    ids=["int-address", "bool-address", "nested-list", "string-not-list", "none-list",
         "bytes-address", "mixed-txt", "int-owner", "bool-seq", "float-time", "no-name"])
def test_a_record_with_a_field_of_the_wrong_type_raises_decode_error(field: int,
                                                                   value: Any) -> None:
    """Records take the fast decoder (scalars and tuples of one scalar type,
    checked by exact type); whatever it does not take, the checked one
    refuses, alone or inside a listing of many."""
    bad = list(GOOD_RECORD)
    bad[field] = value
    for data in (msgpack.packb(bad), msgpack.packb(["ClientReply", 1, 7, 9, 3, "ok", "", 0,
                                                    [GOOD_RECORD, bad]])):
        with pytest.raises(DecodeError):
            decode(data)


def test_many_records_decode_to_what_was_encoded() -> None:
    """A listing above BULK_BYTES, with every field kind, some empty."""
    records = tuple(Record(f"n{i}", tuple(f"192.0.2.{k}" for k in range(i % 3)),
                           ("::1",) if i % 2 else (), ("t",) * (i % 4), "o" * 64, i, i * 7)
                    for i in range(5000))
    reply = ClientReply(1, 7, 9, 3, "ok", records=records)
    data = encode(reply)
    assert len(data) > BULK_BYTES
    assert decode(data) == reply
    listing_with_a_stranger = msgpack.packb(["ClientReply", 1, 7, 9, 3, "ok", "", 0,
                                             [GOOD_RECORD, ["Entry", 1, 2]]])
    with pytest.raises(DecodeError):
        decode(listing_with_a_stranger)


@pytest.mark.parametrize("items", [[[1, 2]], [1], [["x", "k", b""]], [[1, "k", 3]]],
                         ids=["pair", "not-a-triple", "bad-address", "int-payload"])
def test_garbage_envelope_batch_raises_decode_error(items: list) -> None:
    with pytest.raises(DecodeError):
        unpack_envelopes(msgpack.packb(items))


def test_trailing_defaulted_fields_may_be_missing() -> None:
    """A field added at the end of a type, with a default, still reads what
    was written before it existed (logs, snapshots, a peer not yet upgraded)."""
    old_reply = msgpack.packb(["ClientReply", 1, 7, 9, 3, "ok", "", 0, []])
    assert decode(old_reply) == ClientReply(1, 7, 9, 3, "ok")
    old_snapshot = msgpack.packb(["KvSnapshot", [], [], [[9, 3, "ok", "claimed"]], 4])
    assert decode(old_snapshot).outcomes == ()
    assert decode(msgpack.packb(["Entry", 1, 2])) == Entry(term=1, index=2)
