"""Every value that crosses a process boundary or reaches storage.

Raft's messages and persisted records are frozen, slotted dataclasses so that
the core dispatches on types with ``match`` instead of on dict keys.
:func:`encode` and :func:`decode` turn them into bytes and back; this module
is the only importer of msgpack in the project.

Node ids are small positive ints (``1..n``); ``0`` means "nobody" (no vote,
no known leader).
"""

from __future__ import annotations

import dataclasses
import operator
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Union

import msgpack

NO_NODE = 0


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry. ``data`` is opaque to Raft; empty data is a no-op."""

    term: int
    index: int
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class HardState:
    """What a node must find again after a crash, besides its log."""

    term: int = 0
    vote: int = NO_NODE
    commit: int = 0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state machine as of ``index`` (whose entry had ``term``)."""

    index: int = 0
    term: int = 0
    data: bytes = b""


# --- Raft RPCs ---------------------------------------------------------------
#
# Every message names its sender ``src``, its receiver ``dst`` and the
# sender's ``term``.


@dataclass(frozen=True, slots=True)
class RequestVote:
    """A (pre-)candidate asks for a vote in ``term``.

    For a pre-vote, ``term`` is the term the sender *would* campaign in; the
    sender has not moved to it and receivers do not either.
    """

    term: int
    src: int
    dst: int
    last_index: int
    last_term: int
    pre_vote: bool = False


@dataclass(frozen=True, slots=True)
class RequestVoteResponse:
    term: int
    src: int
    dst: int
    granted: bool
    pre_vote: bool = False


@dataclass(frozen=True, slots=True)
class AppendEntries:
    """Entries after ``(prev_index, prev_term)``; empty ``entries`` only probes.

    ``probe``: the leader waits for this one's answer before sending more;
    otherwise (streaming) a follower that lacks ``prev_index`` keeps it
    silently until the appends before it arrive.
    """

    term: int
    src: int
    dst: int
    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...]
    commit: int
    probe: bool = False


@dataclass(frozen=True, slots=True)
class AppendEntriesResponse:
    """Answer to AppendEntries or InstallSnapshot.

    On success ``match_index`` is the last index known to match the leader.
    On rejection ``rejected_index`` is the ``prev_index`` that did not match,
    and the fast back-up hint is ``conflict_term`` (0 when the follower's log
    is too short) with ``conflict_index``, the first index the follower holds
    of that term (or its last index + 1). ``recovering``: the sender lost its
    storage and is catching up, so its acknowledgements must not count.
    """

    term: int
    src: int
    dst: int
    success: bool
    match_index: int = 0
    rejected_index: int = 0
    conflict_term: int = 0
    conflict_index: int = 0
    recovering: bool = False


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Leader liveness; ``commit`` is capped at what ``dst`` is known to hold.

    ``read_seq`` is the newest ReadIndex round this heartbeat confirms.
    """

    term: int
    src: int
    dst: int
    commit: int
    read_seq: int = 0


@dataclass(frozen=True, slots=True)
class HeartbeatResponse:
    term: int
    src: int
    dst: int
    read_seq: int = 0
    recovering: bool = False


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    term: int
    src: int
    dst: int
    snapshot: Snapshot


RaftMessage = Union[
    RequestVote,
    RequestVoteResponse,
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
]


# --- the record store's client protocol ---------------------------------------------
#
# Clients are addressed like nodes, by int ids; the lab gives clerks ids
# above every server id.


@dataclass(frozen=True, slots=True)
class KvOp:
    """One operation on the key/value store.

    ``kind`` is one of ``get``, ``put``, ``append``, ``cas`` (set ``value``
    if the current value equals ``expected``) and ``delete``. Missing keys
    read as the empty string.
    """

    kind: str
    key: str
    value: str = ""
    expected: str = ""


@dataclass(frozen=True, slots=True)
class Record:
    """One name's addresses, as the store keeps them.

    ``name`` is relative to the zone and already normalised
    (:func:`mydns_lab.records.normalize_name`). ``owner`` is the SHA-256
    (hex) of the token that claimed the name; the token itself is never
    stored. ``seq`` is the uploader's sequence number: an upload with a
    lower one never overwrites this record. ``updated_ms`` is the leader's
    wall clock when the last change was proposed.
    """

    name: str
    ipv4: tuple[str, ...] = ()
    ipv6: tuple[str, ...] = ()
    txt: tuple[str, ...] = ()
    owner: str = ""
    seq: int = 0
    updated_ms: int = 0


@dataclass(frozen=True, slots=True)
class RecordOp:
    """One operation on DNS records.

    ``kind``: ``record_set`` (claim the name if free, else update it when
    ``owner`` matches and ``seq`` is not older), ``record_delete`` (when
    ``owner`` matches), ``record_get`` and ``record_list`` (linearizable
    reads), ``record_changes`` (a watch: what changed after serial ``seq``).
    """

    kind: str
    name: str = ""
    ipv4: tuple[str, ...] = ()
    ipv6: tuple[str, ...] = ()
    txt: tuple[str, ...] = ()
    owner: str = ""
    seq: int = 0


Operation = Union[KvOp, RecordOp]


@dataclass(frozen=True, slots=True)
class Command:
    """What a log entry of the record store carries.

    ``(client_id, seq)`` makes retries idempotent; ``time_ms`` is the wall
    time the leader stamped at proposal, so replicas never read a clock.
    """

    client_id: int
    seq: int
    op: Operation
    time_ms: int = 0


@dataclass(frozen=True, slots=True)
class ClientRequest:
    src: int
    dst: int
    client_id: int
    seq: int
    op: Operation


class Status:
    """Outcomes a :class:`ClientReply` can carry. A front end picks its
    reply by status and never reads the words of ``value`` (which are for
    people and may change). The refusals are kept in the record store's
    session table and its snapshots too, so a retried upload is refused for
    the same reason."""

    OK = "ok"
    NOT_LEADER = "not_leader"   # try ``leader_hint`` (0: unknown)
    RETRY = "retry"             # leadership was lost before an answer; try again
    ERROR = "error"             # the operation is invalid; ``value`` says why
    OWNED = "owned"             # the name was claimed by another owner
    STALE = "stale"             # the upload's seq is older than the stored record's


REFUSALS = frozenset({Status.ERROR, Status.OWNED, Status.STALE})
"""Every status of an operation the store refused: final, not to retry."""


@dataclass(frozen=True, slots=True)
class ClientReply:
    src: int
    dst: int
    client_id: int
    seq: int
    status: str
    value: str = ""
    leader_hint: int = NO_NODE
    records: tuple[Record, ...] = ()


@dataclass(frozen=True, slots=True)
class KvSnapshot:
    """The record store's state as stored in a Raft snapshot."""

    items: tuple[tuple[str, str], ...]
    records: tuple[Record, ...]
    sessions: tuple[tuple[int, int, str, str], ...]  # client, seq, status, value
    serial: int = 0


# --- status reports (processes -> launcher, never subject to faults) ----------------


@dataclass(frozen=True, slots=True)
class ServerStatus:
    """What a server process reports a few times a second."""

    node: int
    pid: int
    role: str
    term: int
    leader: int
    commit: int
    applied: int
    last_index: int
    snapshot_index: int
    raft_state_bytes: int


@dataclass(frozen=True, slots=True)
class ClerkStatus:
    """Cumulative counters of one clerk process's front end."""

    clerk: int
    pid: int
    puts_ok: int
    puts_failed: int
    queries_ok: int
    queries_failed: int
    retries: int
    requests_received: int
    latencies_ms: tuple[float, ...]  # a sample of recent operation latencies


@dataclass(frozen=True, slots=True)
class Event:
    """A line worth showing (a role change, an error), from any process."""

    source: str
    text: str


# --- wire codec ----------------------------------------------------------------

_WIRE_TYPES: dict[str, type] = {}
_CLASS_DECODERS: dict[str, Callable[[list], Any]] = {}


def wire_type(cls: type) -> type:
    """Register a dataclass so :func:`encode`/:func:`decode` can carry it.

    Modules that define their own messages (the record store, the clerks)
    decorate them with this; names must be unique across the project. Fields
    may hold plain msgpack values, other registered dataclasses, tuples of
    either, or ``X | None`` of either.
    """
    name = cls.__name__
    if name in _WIRE_TYPES and _WIRE_TYPES[name] is not cls:
        raise ValueError(f"two wire types are named {name}")
    _WIRE_TYPES[name] = cls
    return cls


class DecodeError(ValueError):
    """Bytes that are not a message this project knows."""


Decoder = Callable[[Any], Any]


def _decoder_for(hint: Any) -> Decoder:
    """How to rebuild a field of type ``hint`` from its msgpack form,
    checking that what arrived has that type (DecodeError if not), so a
    malformed packet is refused here instead of failing deep in the core."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return _union_decoder([a for a in typing.get_args(hint) if a is not type(None)],
                              type(None) in typing.get_args(hint))
    if origin is tuple:
        return _tuple_decoder(typing.get_args(hint))
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return lambda raw: _expect_instance(_from_wire(raw), (hint,))
    if hint is bool:
        return lambda raw: _expect_instance(raw, (bool,))
    if hint is int:
        return _int_decoder
    if hint is float:
        return lambda raw: float(_expect_instance(raw, (int, float)))
    if hint in (str, bytes):
        return lambda raw: _expect_instance(raw, (hint,))
    return lambda raw: raw


def _int_decoder(raw: Any) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise DecodeError(f"expected an integer, got {raw!r:.80}")
    return raw


def _union_decoder(options: list[Any], optional: bool) -> Decoder:
    if len(options) == 1:
        inner = _decoder_for(options[0])
    elif all(dataclasses.is_dataclass(o) for o in options):
        allowed = tuple(options)
        inner = lambda raw: _expect_instance(_from_wire(raw), allowed)  # noqa: E731
    else:
        inner = lambda raw: raw  # noqa: E731 - plain msgpack values
    if not optional:
        return inner
    return lambda raw: None if raw is None else inner(raw)


def _tuple_decoder(args: tuple[Any, ...]) -> Decoder:
    if not args:
        return lambda raw: tuple(_expect_list(raw))
    if len(args) == 2 and args[1] is Ellipsis:
        item = _decoder_for(args[0])
        return lambda raw: tuple(item(r) for r in _expect_list(raw))
    items = [_decoder_for(a) for a in args]

    def fixed(raw: Any) -> tuple:
        values = _expect_list(raw)
        if len(values) != len(items):
            raise DecodeError(f"expected {len(items)} values, got {len(values)}")
        return tuple(decode_item(v) for decode_item, v in zip(items, values))
    return fixed


def _expect_instance(value: Any, kinds: tuple[type, ...]) -> Any:
    if not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise DecodeError(f"expected {names}, got {type(value).__name__}: {value!r:.60}")
    return value


def _expect_list(raw: Any) -> list:
    if not isinstance(raw, list):
        raise DecodeError(f"expected a list, got {raw!r:.80}")
    return raw


_Encoder = Callable[[Any], Any]
_ENCODERS: dict[type, _Encoder] = {}
_SCALARS = (int, str, bytes, float, bool)


def _to_wire(value: Any) -> Any:
    """The msgpack form of ``value``: a dataclass becomes ``[type name,
    *fields]``, recursively; tuples and plain values go as they are (msgpack
    packs a tuple as an array)."""
    encoder = _ENCODERS.get(type(value))
    if encoder is None:
        if isinstance(value, tuple):
            return [_to_wire(v) for v in value]
        if not dataclasses.is_dataclass(value):
            return value
        encoder = _ENCODERS[type(value)] = _class_encoder(type(value))
    return encoder(value)


def _class_encoder(cls: type) -> _Encoder:
    """The encoder of one dataclass, built once from its type hints so that
    a field known to hold plain values is copied without looking at it (the
    encoder runs for every entry of every append, on every process)."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    tag = cls.__name__
    convert = [(n, enc) for n, enc in enumerate((_field_encoder(hints[name]) for name in names), start=1)
               if enc is not None]
    if len(names) == 1:  # attrgetter of one name gives the value, not a 1-tuple
        only = operator.attrgetter(names[0])
        fields: Callable[[Any], tuple] = lambda value: (only(value),)  # noqa: E731
    else:
        fields = operator.attrgetter(*names)
    if not convert:
        return lambda value: [tag, *fields(value)]

    def encode(value: Any) -> list[Any]:
        out = [tag, *fields(value)]
        for n, encode_field in convert:
            out[n] = encode_field(out[n])
        return out
    return encode


def _field_encoder(hint: Any) -> _Encoder | None:
    """How to encode a field of type ``hint``; None when its values go to
    msgpack as they are."""
    if hint in _SCALARS:
        return None
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple and len(args) == 2 and args[1] is Ellipsis and args[0] in _SCALARS:
        return None
    return _to_wire


def _from_wire(raw: Any) -> Any:
    if not isinstance(raw, list) or not raw or not isinstance(raw[0], str):
        raise DecodeError(f"not an encoded message: {raw!r:.80}")
    decoder = _CLASS_DECODERS.get(raw[0])
    if decoder is None:
        cls = _WIRE_TYPES.get(raw[0])
        if cls is None:
            raise DecodeError(f"unknown message type {raw[0]!r}")
        decoder = _CLASS_DECODERS[raw[0]] = _class_decoder(cls)
    return decoder(raw)


def _class_decoder(cls: type) -> Callable[[list], Any]:
    """The decoder of one registered dataclass, from ``[type name,
    *fields]``, built once from its type hints. Each field is checked
    against its type (DecodeError if it does not fit). A class whose fields
    are all ints, strings, bytes or bools has a fast path: one comparison of
    the values' exact types (which also turns a bool away from an int)."""
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    decoders = [_decoder_for(hints[f.name]) for f in fields]

    def checked(raw: list) -> Any:
        if len(raw) - 1 != len(decoders):
            raise DecodeError(f"{raw[0]} needs {len(decoders)} fields, got {len(raw) - 1}")
        try:
            return cls(*(decode_field(value) for decode_field, value in zip(decoders, raw[1:])))
        except (TypeError, ValueError) as exc:
            raise DecodeError(f"bad {raw[0]}: {exc}") from exc

    exact = [str] + [hints[f.name] for f in fields]
    if not all(kind in (int, str, bytes, bool) for kind in exact):
        return checked

    def fast(raw: list) -> Any:
        if list(map(type, raw)) != exact:
            return checked(raw)  # which names what does not fit
        try:
            return cls(*raw[1:])
        except (TypeError, ValueError) as exc:
            raise DecodeError(f"bad {raw[0]}: {exc}") from exc
    return fast


Envelope = tuple[int, str, bytes]
"""(address, message type name, encoded message): what pipes carry, so the
router can route and count without decoding payloads."""


def pack_envelopes(envelopes: list[Envelope]) -> bytes:
    """Many envelopes in one pipe frame (one write per batch)."""
    return msgpack.packb(envelopes, use_bin_type=True)


def unpack_envelopes(data: bytes) -> list[Envelope]:
    try:
        items = msgpack.unpackb(data, raw=False, use_list=True)
    except Exception as exc:
        raise DecodeError(f"not an envelope batch: {exc}") from exc
    if not isinstance(items, list):
        raise DecodeError("not an envelope batch")
    for item in items:
        if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], int)
                and not isinstance(item[0], bool) and isinstance(item[1], str)
                and isinstance(item[2], bytes)):
            raise DecodeError(f"not an envelope: {item!r:.80}")
    return [(a, k, p) for a, k, p in items]


def encode(message: Any) -> bytes:
    """Serialise a registered dataclass (nested ones and tuples included)."""
    return msgpack.packb(_to_wire(message), use_bin_type=True)


def decode(data: bytes) -> Any:
    """Inverse of :func:`encode`; raises :class:`DecodeError` on bad input."""
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise DecodeError(f"not msgpack: {exc}") from exc
    return _from_wire(raw)


for _cls in (Entry, HardState, Snapshot, RequestVote, RequestVoteResponse, AppendEntries,
             AppendEntriesResponse, Heartbeat, HeartbeatResponse, InstallSnapshot,
             KvOp, Record, RecordOp, Command, ClientRequest, ClientReply, KvSnapshot,
             ServerStatus, ClerkStatus, Event):
    wire_type(_cls)
