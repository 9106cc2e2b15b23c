"""The history files the linearizability checker reads, as
:class:`~mydns_lab.linearizability.models.Operation` lists.

Two formats, both from third-party tools (see ../shared/fixtures/porcupine):
porcupine's KV histories, one Clojure map per line, for
:class:`~mydns_lab.linearizability.models.KvModel`; and Jepsen's etcd logs, whose
``INFO jepsen.util - P :type :f V`` lines describe one register, for
:class:`~mydns_lab.linearizability.RegisterModel`. A file that does not parse
raises :class:`HistoryFormatError` naming the file and line.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from .models import REGISTER_MODEL, KvModel, Model, Operation

FORMATS = ("porcupine-kv", "jepsen")


class HistoryFormatError(ValueError):
    """A history file that does not parse as the format it was given as."""


@dataclass(frozen=True, slots=True)
class _Record:
    """One line of a Jepsen-style log: ``process`` did ``kind`` (invoke, ok,
    fail or info) of function ``f`` on ``key`` with ``value``."""

    line: int
    process: int
    kind: str
    f: str
    value: Any
    key: Any = None


_InputOf = Callable[[_Record], Any]
_OutputOf = Callable[[_Record, _Record], Any]


def _pair(records: Iterable[_Record], source: str, input_of: _InputOf,
          output_of: _OutputOf) -> list[Operation]:
    """Operations from records, matching each invoke with its process's next
    completion; times are line numbers. ``:ok`` gives a known outcome,
    ``:info`` or no completion an unknown one; ``:fail`` means it did not take
    effect, which for a cas is exactly a cas that returned False and for
    anything else means the operation is dropped."""
    pending: dict[int, _Record] = {}
    ops: list[Operation] = []
    for rec in records:
        if rec.kind == "invoke":
            if rec.process in pending:
                raise HistoryFormatError(
                    f"{source} line {rec.line}: process {rec.process} invokes while its "
                    f"operation from line {pending[rec.process].line} is still pending")
            pending[rec.process] = rec
            continue
        inv = pending.pop(rec.process, None)
        if inv is None or inv.f != rec.f or inv.key != rec.key:
            raise HistoryFormatError(f"{source} line {rec.line}: :{rec.kind} :{rec.f} of process "
                                     f"{rec.process} matches no pending :invoke")
        if rec.kind == "ok":
            ops.append(Operation(rec.process, inv.line, rec.line, input_of(inv), output_of(inv, rec)))
        elif rec.kind == "info":
            ops.append(Operation(rec.process, inv.line, None, input_of(inv), None))
        elif rec.f == "cas":
            ops.append(Operation(rec.process, inv.line, rec.line, input_of(inv), False))
    ops += [Operation(inv.process, inv.line, None, input_of(inv), None) for inv in pending.values()]
    return sorted(ops, key=lambda op: op.call)


_EDN_ATOM = r'"(?:[^"\\]|\\.)*"|:[\w?!*+.-]+|nil|true|false|-?\d+'
_EDN_PAIR = re.compile(rf":([\w?!*+.-]+)\s+({_EDN_ATOM})")
_EDN_MAP = re.compile(rf"\{{\s*(?::[\w?!*+.-]+\s+(?:{_EDN_ATOM})\s*,?\s*)*\}}")


def _edn_atom(raw: str) -> Any:
    if raw.startswith('"'):
        return json.loads(raw)
    if raw.startswith(":"):
        return raw[1:]
    return {"nil": None, "true": True, "false": False}[raw] if raw.isalpha() else int(raw)


def _kv_records(text: str, source: str) -> Iterable[_Record]:
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if not _EDN_MAP.fullmatch(line.strip()):
            raise HistoryFormatError(f"{source} line {line_no}: not a flat {{:key value, ...}} map")
        try:
            fields = {name: _edn_atom(raw) for name, raw in _EDN_PAIR.findall(line)}
        except ValueError as err:  # a string json cannot read, e.g. a Clojure-only escape
            raise HistoryFormatError(f"{source} line {line_no}: unreadable value: {err}") from None
        kind, f = fields.get("type"), fields.get("f")
        if (not isinstance(fields.get("process"), int) or kind not in ("invoke", "ok", "fail", "info")
                or f not in ("get", "put", "append") or not isinstance(fields.get("key"), str)):
            raise HistoryFormatError(f"{source} line {line_no}: need :process N, :type "
                                     ":invoke|:ok|:fail|:info, :f :get|:put|:append and :key \"K\"")
        yield _Record(line_no, fields["process"], kind, f, fields.get("value"), fields["key"])


def _kv_input(inv: _Record) -> Any:
    return ("get", inv.key) if inv.f == "get" else (inv.f, inv.key, inv.value)


def _kv_output(inv: _Record, done: _Record) -> Any:
    return done.value if inv.f == "get" else None


def parse_porcupine_kv(text: str, source: str = "history") -> list[Operation]:
    """Operations of porcupine's KV format (one Clojure map per line), for
    :class:`KvModel`. ``source`` names the file in error messages."""
    ops = _pair(_kv_records(text, source), source, _kv_input, _kv_output)
    if not ops:
        raise HistoryFormatError(f"{source}: no operations found")
    return ops


_JEPSEN_LINE = re.compile(r"INFO\s+jepsen\.util\s+-\s+(\d+)\s+:(invoke|ok|fail|info)\s+:([\w-]+)\s+(.*?)\s*$")
_JEPSEN_VALUE = re.compile(r"(nil)|(-?\d+)|\[\s*(-?\d+)\s+(-?\d+)\s*\]|:([\w-]+)")


def _jepsen_records(text: str, source: str) -> Iterable[_Record]:
    """Records of the ``jepsen.util`` lines; any other line is noise."""
    for line_no, line in enumerate(text.splitlines(), start=1):
        found = _JEPSEN_LINE.search(line)
        if not found:
            continue
        process, kind, f, raw = found.groups()
        value = _JEPSEN_VALUE.fullmatch(raw)
        if f not in ("read", "write", "cas") or value is None:
            raise HistoryFormatError(f"{source} line {line_no}: expected :read, :write or :cas "
                                     f"with nil, N, [A B] or :keyword, got :{f} {raw}")
        nil, num, a, b, _keyword = value.groups()
        parsed = None if nil else int(num) if num else (int(a), int(b)) if a else raw
        if kind == "invoke" and (f == "cas") != isinstance(parsed, tuple):
            raise HistoryFormatError(f"{source} line {line_no}: :{f} cannot take {raw}")
        yield _Record(line_no, int(process), kind, f, parsed)


def _register_input(inv: _Record) -> Any:
    if inv.f == "read":
        return ("read",)
    return ("write", inv.value) if inv.f == "write" else ("cas", *inv.value)


def _register_output(inv: _Record, done: _Record) -> Any:
    """A read returns its value, an ok cas applied, a write says nothing.
    (A ``:fail :read`` timed out: :func:`_pair` drops it, as it says nothing.)"""
    if inv.f == "read":
        return done.value
    return True if inv.f == "cas" else None


def parse_jepsen_register(text: str, source: str = "history") -> list[Operation]:
    """Operations of a Jepsen etcd log (``INFO jepsen.util - P :type :f V``
    lines), for :class:`RegisterModel`."""
    ops = _pair(_jepsen_records(text, source), source, _register_input, _register_output)
    if not ops:
        raise HistoryFormatError(f"{source}: no 'INFO jepsen.util - P :invoke ...' lines found")
    return ops



def load_history(path: Path, fmt: str, partition: bool = True) -> tuple[list[Operation], Model]:
    """Parse ``path`` as ``fmt`` (one of :data:`FORMATS`) and pick its
    model. Raises OSError, UnicodeDecodeError or HistoryFormatError."""
    text = path.read_text(encoding="utf-8")
    if fmt == "porcupine-kv":
        return parse_porcupine_kv(text, str(path)), KvModel(partition=partition)
    return parse_jepsen_register(text, str(path)), REGISTER_MODEL
