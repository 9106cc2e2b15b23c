"""Bytes for every value that crosses a process boundary or reaches disk.

The only importer of msgpack in the project, and the one registry of wire
types: :data:`WIRE_TYPES` lists every dataclass :func:`encode` and
:func:`decode` carry, each defined beside its concept (the Raft core's
messages, the record store's protocol, the status reports; file storage
names its own records where it decodes them). The pure modules never import this one; their hosts pass it in
where bytes are needed (the record store's log entries and snapshots).
"""

from __future__ import annotations

import dataclasses
import gc
import operator
import types
import typing
from typing import Any, Callable, Union

import msgpack

from .core.messages import (AppendEntries, AppendEntriesResponse, Entry, HardState, Heartbeat,
                            HeartbeatResponse, InstallSnapshot, RequestVote, RequestVoteResponse,
                            Snapshot, TermQuery, TermReport)
from .protocol import ClientReply, ClientRequest, Command, KvOp, KvSnapshot, Record, RecordOp
from .reports import ClerkStatus, DirectTraffic, Event, ServerStatus

WIRE_TYPES: tuple[type, ...] = (
    Entry, HardState, Snapshot, RequestVote, RequestVoteResponse, AppendEntries,
    AppendEntriesResponse, Heartbeat, HeartbeatResponse, InstallSnapshot, TermQuery, TermReport,
    KvOp, Record, RecordOp, Command, ClientRequest, ClientReply, KvSnapshot,
    ServerStatus, ClerkStatus, Event, DirectTraffic,
)
"""Every type :func:`encode` and :func:`decode` carry, each defined beside
its concept (file storage's own records are named at each decode instead:
see ``also``). A field may hold plain msgpack values, another of these types,
a tuple of either, or ``X | None`` of either. A new wire type is added here."""

_BY_NAME: dict[str, type] = {cls.__name__: cls for cls in WIRE_TYPES}
assert len(_BY_NAME) == len(WIRE_TYPES), "two wire types share a name"
_CLASS_DECODERS: dict[type, Callable[[list], Any]] = {}


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
    if len(args) == 2 and args[1] is Ellipsis and dataclasses.is_dataclass(args[0]):
        return _many_decoder(args[0])
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


def _many_decoder(cls: type) -> Decoder:
    """``tuple[cls, ...]``, such as the records of a snapshot or a full
    listing (hundreds of thousands of them). Each item that names ``cls``
    goes straight to its class decoder; any other goes the general way,
    which accepts or refuses it."""
    name = cls.__name__

    def many(raw: Any) -> tuple:
        decode_one = _decoder_of(cls)
        return tuple(decode_one(r) if type(r) is list and r and r[0] == name
                     else _expect_instance(_from_wire(r), (cls,)) for r in _expect_list(raw))
    return many


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


def _from_wire(raw: Any, also: tuple[type, ...] = ()) -> Any:
    if not isinstance(raw, list) or not raw or not isinstance(raw[0], str):
        raise DecodeError(f"not an encoded message: {raw!r:.80}")
    cls = _BY_NAME.get(raw[0]) or next((c for c in also if c.__name__ == raw[0]), None)
    if cls is None:
        raise DecodeError(f"unknown message type {raw[0]!r}")
    return _decoder_of(cls)(raw)


def _decoder_of(cls: type) -> Callable[[list], Any]:
    """The class decoder of ``cls``, built on first use."""
    decoder = _CLASS_DECODERS.get(cls)
    if decoder is None:
        decoder = _CLASS_DECODERS[cls] = _class_decoder(cls)
    return decoder


def _class_decoder(cls: type) -> Callable[[list], Any]:
    """The decoder of one registered dataclass, from ``[type name,
    *fields]``, built once from its type hints. Each field is checked
    against its type (DecodeError if it does not fit). A class whose fields
    are all ints, strings, bytes or bools has a fast path: one comparison of
    the values' exact types (which also turns a bool away from an int);
    so does one whose other fields are tuples of those (``tuple[str, ...]``,
    a Record's addresses), with one more check per tuple, or wire types
    (a Command's op, an AppendEntries' entries: see
    :func:`_nested_decoder`). Whatever the fast path does not take, the
    checked one decides.

    Trailing fields with defaults may be missing: they take their defaults,
    so a field added at the end of a type still reads logs, snapshots and
    messages written before it existed."""
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    decoders = [_decoder_for(hints[f.name]) for f in fields]
    required = sum(1 for f in fields if f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING)

    def checked(raw: list) -> Any:
        if not required <= len(raw) - 1 <= len(decoders):
            wanted = (f"{len(decoders)}" if required == len(decoders)
                      else f"{required} to {len(decoders)}")
            raise DecodeError(f"{raw[0]} needs {wanted} fields, got {len(raw) - 1}")
        try:
            return cls(*(decode_field(value) for decode_field, value in zip(decoders, raw[1:])))
        except (TypeError, ValueError) as exc:
            raise DecodeError(f"bad {raw[0]}: {exc}") from exc

    exact: list[type] = [str]          # the type of each raw value, the type name first
    sequences: list[tuple[int, set[type]]] = []  # tuple[scalar, ...] fields: where, item type
    nested: list[tuple[int, Decoder]] = []       # wire-type fields: where, their decoder
    for position, f in enumerate(fields, 1):
        hint = hints[f.name]
        item = _sequence_item(hint)
        inner = _nested_decoder(hint)
        if hint in _EXACT:
            exact.append(hint)
        elif item is not None:
            exact.append(list)
            sequences.append((position, {item}))
        elif inner is not None:
            exact.append(list)
            nested.append((position, inner))
        else:
            return checked

    def fast(raw: list) -> Any:
        if list(map(type, raw)) != exact:
            return checked(raw)  # which names what does not fit
        values = raw[1:]
        for position, item in sequences:
            value = raw[position]
            if value and set(map(type, value)) != item:
                return checked(raw)
            values[position - 1] = tuple(value)
        for position, decode_nested in nested:
            values[position - 1] = decode_nested(raw[position])
        try:
            return cls(*values)
        except (TypeError, ValueError) as exc:
            raise DecodeError(f"bad {raw[0]}: {exc}") from exc
    return fast


def _nested_decoder(hint: Any) -> Decoder | None:
    """For the fast path, the decoder of a field holding a wire type, one
    of a union of them, or a tuple of one (``tuple[Entry, ...]``), taking
    the raw list; it raises DecodeError for anything else. None for every
    other kind of field (``X | None`` included)."""
    args = typing.get_args(hint)
    if (typing.get_origin(hint) is tuple and len(args) == 2 and args[1] is Ellipsis
            and dataclasses.is_dataclass(args[0])):
        return _many_decoder(args[0])
    options = args if typing.get_origin(hint) in (Union, types.UnionType) else (hint,)
    if not all(isinstance(o, type) and dataclasses.is_dataclass(o) for o in options):
        return None
    by_name = {o.__name__: o for o in options}

    def one(raw: list) -> Any:
        cls = by_name.get(raw[0]) if raw and type(raw[0]) is str else None
        if cls is None:
            raise DecodeError(f"expected {' or '.join(by_name)}, got {raw!r:.60}")
        return _decoder_of(cls)(raw)
    return one


_EXACT = (int, str, bytes, bool)
"""Field types the fast decoder checks by exact type (so a bool is no int)."""


def _sequence_item(hint: Any) -> type | None:
    """``str`` for ``tuple[str, ...]``, likewise for the other exact types; else None."""
    args = typing.get_args(hint)
    if (typing.get_origin(hint) is tuple and len(args) == 2 and args[1] is Ellipsis
            and args[0] in _EXACT):
        return args[0]
    return None


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


BULK_BYTES = 64 * 1024
"""A message this large (a snapshot, a front end's full listing) is decoded
with the cyclic garbage collector paused: its hundreds of thousands of new
lists and records would otherwise trigger collection after collection, each
walking everything allocated so far. For 100,000 records that halved
msgpack's own time (318 to 142 ms, one run)."""


def decode(data: bytes, also: tuple[type, ...] = ()) -> Any:
    """Inverse of :func:`encode`; raises :class:`DecodeError` on bad input.

    ``also``: dataclasses outside :data:`WIRE_TYPES` that the caller
    expects at the top level (file storage's own records); nested values
    are always of the wire types."""
    if len(data) >= BULK_BYTES and gc.isenabled():
        gc.disable()  # see BULK_BYTES; reference counting still frees as usual
        try:
            return _decode(data, also)
        finally:
            gc.enable()
    return _decode(data, also)


def _decode(data: bytes, also: tuple[type, ...]) -> Any:
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise DecodeError(f"not msgpack: {exc}") from exc
    return _from_wire(raw, also)

