"""What the checker checks a history against: :class:`Operation`, the
:class:`Model` interface, and the KV and register models.

An operation whose outcome is unknown (``ret is None``) is stepped with the
:data:`UNKNOWN` output, which every model must accept.
"""

from __future__ import annotations

import bisect
import enum
from dataclasses import dataclass
from typing import Any, Hashable, Sequence


class _Unknown(enum.Enum):
    """Type of :data:`UNKNOWN`; an enum member so that it is a singleton
    that survives pickling (simulator runs may ship histories to workers)."""

    UNKNOWN = "unknown"

    def __repr__(self) -> str:
        return "?"


UNKNOWN = _Unknown.UNKNOWN
"""The output :meth:`Model.step` receives for an operation whose outcome is
unknown. Test it with ``output is UNKNOWN``."""


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation as a client saw it: called at ``call``, returned
    ``output`` at ``ret``. ``ret is None`` means the outcome is unknown; then
    ``output`` is ignored. Times are in any monotonic unit, only their order
    matters; an operation whose call equals another's return counts as
    concurrent with it."""

    client: int
    call: float
    ret: float | None
    input: Any
    output: Any


class Model:
    """A sequential specification: the object every history is checked
    against. Subclasses define :meth:`init` and :meth:`step`; states must be
    hashable and compare equal exactly when they behave the same, since the
    search memoises on them."""

    def init(self) -> Hashable:
        """The state before any operation."""
        raise NotImplementedError

    def step(self, state: Hashable, input: Any, output: Any) -> tuple[bool, Hashable]:
        """Whether ``input`` may return ``output`` in ``state``, and the state
        after it. ``output`` is :data:`UNKNOWN` when the outcome is unknown:
        then any output is acceptable, so the step should be legal whenever
        the input can take effect, leading to the state it leads to."""
        raise NotImplementedError

    def read_only(self, input: Any, output: Any) -> bool:
        """True if ``input`` returning ``output`` leaves every state where it
        is legal unchanged (a read, a refused cas). The search then commits to
        such an operation as soon as it is legal, without trying other orders;
        answering False is always safe, only slower. Default False."""
        return False

    def partition(self, ops: list[Operation]) -> list[list[Operation]]:
        """Independent sub-histories, each checked on its own: the history
        is linearizable iff every part is. Default: one part."""
        return [ops]

    def footprint(self, input: Any) -> Hashable | None:
        """The part of the state ``input`` reads and writes, for a model
        whose state is a product of independent parts (a map's keys, say):
        an operation's legality, output and effect depend on its own part
        alone and leave every other part as it was. The search then stays
        one search over the whole state but reasons part by part (see
        :func:`_search`). None, the default, means the whole state; if any
        operation answers None the search is the plain one."""
        return None

    def project(self, state: Hashable, footprint: Hashable) -> Hashable:
        """The part of ``state`` that ``footprint`` names, hashable and equal
        exactly when that part behaves the same. Only called when every
        operation has a footprint."""
        raise NotImplementedError(f"{type(self).__name__} gives footprints but no project()")

    def describe(self, op: Operation) -> str:
        """One line naming what ``op`` did, for reports."""
        return f"{op.input!r} -> {_output_text(op)}"

    def describe_state(self, state: Hashable) -> str:
        """One line showing a state, for reports."""
        return repr(state)

    def describe_partition(self, ops: Sequence[Operation]) -> str:
        """What a part returned by :meth:`partition` holds, e.g. ``key 'a'``."""
        return "whole history"


def _output_text(op: Operation) -> str:
    return "?" if op.ret is None else repr(op.output)


class KvModel(Model):
    """A map from string keys to string values, every key starting as "".

    Inputs and legal outputs: ``('get', k)`` -> the value; ``('put', k, v)``,
    ``('append', k, v)``, ``('delete', k)`` -> anything (conventionally
    None: they say nothing about the state); ``('cas', k, expected, new)`` ->
    whether it applied. With ``partition=True`` each key is checked on its
    own and the state is the key's value; with ``partition=False`` the whole
    history is one object whose state is the sorted tuple of (key, value)
    items whose value is not "".
    """

    def __init__(self, partition: bool = True) -> None:
        self.partitioned = partition

    def init(self) -> Hashable:
        return "" if self.partitioned else ()

    def step(self, state: Hashable, input: Any, output: Any) -> tuple[bool, Hashable]:
        if self.partitioned:
            return _kv_step(state, input, output)
        # Items stay sorted by key, so bisect finds the key without building
        # a dict: this step is the hot path of every whole-history check.
        key = input[1]
        at = bisect.bisect_left(state, (key,))
        present = at < len(state) and state[at][0] == key
        old = state[at][1] if present else ""
        legal, new = _kv_step(old, input, output)
        if new == old:
            return legal, state
        item = () if new == "" else ((key, new),)
        return legal, state[:at] + item + state[at + present:]

    def read_only(self, input: Any, output: Any) -> bool:
        return input[0] == "get" or (input[0] == "cas" and output is False)

    def footprint(self, input: Any) -> Hashable | None:
        return None if self.partitioned else input[1]

    def project(self, state: Hashable, footprint: Hashable) -> Hashable:
        at = bisect.bisect_left(state, (footprint,))
        return state[at][1] if at < len(state) and state[at][0] == footprint else ""

    def partition(self, ops: list[Operation]) -> list[list[Operation]]:
        if not self.partitioned:
            return [ops]
        by_key: dict[Any, list[Operation]] = {}
        for op in ops:
            by_key.setdefault(op.input[1], []).append(op)
        return list(by_key.values())

    def describe(self, op: Operation) -> str:
        kind, key, *args = op.input
        text = f"{kind} {key!r}" + "".join(f" {a!r}" for a in args)
        return f"{text} -> {_output_text(op)}" if kind in ("get", "cas") else text

    def describe_partition(self, ops: Sequence[Operation]) -> str:
        if self.partitioned and ops:
            return f"key {ops[0].input[1]!r}"
        return "all keys as one object"


def _kv_step(value: Any, input: Any, output: Any) -> tuple[bool, Any]:
    """One key's transition: ``value`` is its current value."""
    kind = input[0]
    if kind == "get":
        return output is UNKNOWN or output == value, value
    if kind == "put":
        return True, input[2]
    if kind == "append":
        return True, value + input[2]
    if kind == "cas":
        applied = value == input[2]
        return output is UNKNOWN or output == applied, input[3] if applied else value
    if kind == "delete":
        return True, ""
    raise ValueError(f"unknown KV operation {input!r}; expected get, put, append, cas or delete")


class RegisterModel(Model):
    """One register, absent (None) at first. ``('read',)`` -> its value or
    None; ``('write', v)`` -> anything (conventionally None); ``('cas', a,
    b)`` -> whether it applied (set b because the value was a)."""

    def init(self) -> Hashable:
        return None

    def step(self, state: Hashable, input: Any, output: Any) -> tuple[bool, Hashable]:
        kind = input[0]
        if kind == "read":
            return output is UNKNOWN or output == state, state
        if kind == "write":
            return True, input[1]
        if kind == "cas":
            applied = state == input[1]
            return output is UNKNOWN or output == applied, input[2] if applied else state
        raise ValueError(f"unknown register operation {input!r}; expected read, write or cas")

    def read_only(self, input: Any, output: Any) -> bool:
        return input[0] == "read" or (input[0] == "cas" and output is False)

    def describe(self, op: Operation) -> str:
        kind, *args = op.input
        text = kind + "".join(f" {a!r}" for a in args)
        return text if kind == "write" else f"{text} -> {_output_text(op)}"


KV_MODEL = KvModel()
REGISTER_MODEL = RegisterModel()
