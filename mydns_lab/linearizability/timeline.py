"""A violation drawn as a self-contained HTML page: one row per client,
one bar per operation, the longest linearizable prefix and the operations
that cannot be placed after it picked out. Written by the linearizability
command line and by the workloads when a history fails the check."""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Sequence

from .models import Operation
from .search import NOT_LINEARIZABLE, CheckResult

_PX_PER_EVENT = 18
_TIMELINE_CSS = """
body{font:13px system-ui,sans-serif;margin:16px;color:#222}
.scroll{overflow-x:auto;border:1px solid #ccc}
.lane{position:relative;height:26px;border-bottom:1px solid #eee}
.who{position:sticky;left:0;z-index:2;background:#fff;width:70px;height:25px;line-height:25px;padding-left:4px}
.op{position:absolute;top:3px;height:18px;line-height:18px;border-radius:3px;overflow:hidden;
white-space:nowrap;font-size:11px;padding:0 3px;box-sizing:border-box;background:#ccc}
.prefix{background:#9fd59f}.unplaceable{background:#f08080;font-weight:bold}
.blocking{outline:3px solid #b00}.unknown{border-right:3px dashed #666;opacity:.8}
.legend span{display:inline-block;padding:0 6px;margin-right:8px;border-radius:3px}
pre{background:#f6f6f6;padding:8px;overflow-x:auto}
"""


def write_html_timeline(result: CheckResult, path: str | os.PathLike[str]) -> Path:
    """Write a self-contained HTML page (no external assets) drawing the
    failing part of a violation: one row per client (more if its operations
    overlap), one bar per operation from call to return, in event order.
    Bars of the longest prefix are green and numbered in linearization
    order; the operations that cannot be placed are red, the one that returns
    first outlined. Returns the path written. Raises ValueError unless the
    verdict is "not linearizable"."""
    if result.verdict != NOT_LINEARIZABLE:
        raise ValueError(f"only a violation has a failing part to draw; the verdict was {result.verdict!r}")
    out = Path(path)
    out.write_text(_timeline_page(result), encoding="utf-8")
    return out


def _timeline_page(result: CheckResult) -> str:
    ops = result.failed_partition
    times = sorted({op.call for op in ops} | {op.ret for op in ops if op.ret is not None})
    rank = {t: n for n, t in enumerate(times)}
    end_rank = len(times)  # where unknown outcomes are drawn to: "until the end"
    order = {id(op): n for n, op in enumerate(result.longest_prefix, start=1)}
    bad = {id(op) for op in result.unplaceable}
    rows = []
    for client, lanes in _lanes(ops, rank, end_rank).items():
        for n, lane in enumerate(lanes):
            bars = "".join(_bar(result, op, rank, end_rank, order, bad) for op in lane)
            label = f"client {client}" if n == 0 else ""
            rows.append(f'<div class="lane" style="width:{(end_rank + 2) * _PX_PER_EVENT + 80}px">'
                        f'<div class="who">{html.escape(label)}</div>{bars}</div>')
    title = f"Linearizability violation: {result.model.describe_partition(ops)}"
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_TIMELINE_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
            '<p class="legend"><span class="prefix">longest linearizable prefix (numbered)</span>'
            '<span class="unplaceable">cannot be placed next</span>'
            '<span class="op unknown" style="position:static">outcome unknown</span>'
            "<span>other</span> &mdash; x axis: event order; hover a bar for details</p>"
            f'<div class="scroll">{"".join(rows)}</div>'
            f"<h2>Explanation</h2><pre>{html.escape(result.explain())}</pre></body></html>\n")


def _lanes(ops: Sequence[Operation], rank: dict[float, int],
           end_rank: int) -> dict[int, list[list[Operation]]]:
    """Per client, rows of operations that do not overlap on screen (a client
    whose call timed out may call again while the first is in flight)."""
    lanes: dict[int, list[list[Operation]]] = {}
    for op in sorted(ops, key=lambda op: (op.client, op.call)):
        rows = lanes.setdefault(op.client, [])
        free = next((row for row in rows if _end(row[-1], rank, end_rank) < rank[op.call]), None)
        if free is None:
            rows.append([op])
        else:
            free.append(op)
    return dict(sorted(lanes.items()))


def _end(op: Operation, rank: dict[float, int], end_rank: int) -> int:
    return end_rank if op.ret is None else rank[op.ret]


def _bar(result: CheckResult, op: Operation, rank: dict[float, int], end_rank: int,
         order: dict[int, int], bad: set[int]) -> str:
    left = 80 + rank[op.call] * _PX_PER_EVENT
    width = max(_PX_PER_EVENT, (_end(op, rank, end_rank) - rank[op.call]) * _PX_PER_EVENT)
    classes = ["op"]
    label = result.model.describe(op)
    if id(op) in order:
        classes.append("prefix")
        label = f"{order[id(op)]}. {label}"
    if id(op) in bad:
        classes.append("unplaceable")
        label = "CANNOT BE PLACED: " + label
    if op is result.blocking:
        classes.append("blocking")
    if op.ret is None:
        classes.append("unknown")
    tip = result.describe_op(op)
    return (f'<div class="{" ".join(classes)}" style="left:{left}px;width:{width}px" '
            f'title="{html.escape(tip)}">{html.escape(label)}</div>')
