"""Linearizability checking of operation histories, in the manner of porcupine.

Simulator tests record what clients saw as :class:`Operation` values and call
:func:`check` with a :class:`Model` of the object they used. The checker runs
Wing & Gong's search with Lowe's memoisation, as porcupine does: walk a
time-ordered, doubly-linked list of call and return events; try to linearize
each operation whose call precedes the earliest pending return; remember
every (set of linearized operations, model state) pair already explored, the
set as an int bitmask, so that no configuration is searched twice; and
backtrack when a return is reached before its operation could be linearized.
Two reductions on top: an operation the model calls read-only (a read, a
refused cas) is linearized as soon as it is legal, with no other order tried,
which is safe because it could always have been moved that early; and the
candidates are tried earliest return first, so an operation that runs long is
placed late unless something needs it sooner. Models may split a history
into independent parts (one per key, say), which are checked one by one,
smallest first.

A model whose state is a product of independent parts can instead declare
each operation's footprint (a map's key): then one search over the whole
state tries only the operations on the part the earliest pending return is
on, remembers a failure by that part alone, and backjumps past operations on
other parts. That is how a many-key history is checked as one object.

An operation whose outcome is unknown (``ret is None``: a timeout, a lost
reply) may take effect at any point after its call, or never. Its return is
at +infinity, so it never forces a backtrack, and the search succeeds as
soon as every operation with a known outcome is linearized: the unknown ones
left over are the ones that never happened. Its model step receives the
:data:`UNKNOWN` output, which every model must accept.

The models are in :mod:`.models`, the history file formats in
:mod:`.formats`, the HTML timeline of a violation in :mod:`.timeline` and
the command line in :mod:`.__main__`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Literal, Sequence

from .models import UNKNOWN, Model, Operation

LINEARIZABLE = "linearizable"
NOT_LINEARIZABLE = "not linearizable"
UNKNOWN_VERDICT = "unknown"
Verdict = Literal["linearizable", "not linearizable", "unknown"]


# --- The search ----------------------------------------------------------------

_RETURN = -2      # match[] of a return node (and of the tail sentinel)
_NO_RETURN = -1   # match[] of a call whose outcome is unknown
_CLOCK_EVERY = 0x3FF  # the search looks at the clock every 1024 steps


@dataclass(slots=True)
class _Outcome:
    """What searching one part found. On failure: the deepest configuration
    reached (first time reached), as op indices into the part."""

    verdict: Verdict
    prefix: list[int] = field(default_factory=list)
    state: Hashable = None
    blocking: int = -1
    candidates: list[int] = field(default_factory=list)


@dataclass(slots=True)
class _Events:
    """Calls and returns as doubly-linked lists held in parallel int arrays.

    Nodes ``0 .. n-1`` are the events, ordered by time with calls before
    returns at equal times. Each component's events form one list, between
    its head sentinel ``head[c]`` and its tail; every return also sits in one
    more list, of returns only, whose head sentinel is ``n``. ``match`` holds
    the return node of a call node, ``_NO_RETURN`` for a call whose outcome
    is unknown (its return would be at +infinity and is left out: no search
    ever needs to reach it) and ``_RETURN`` on return nodes and on every tail
    sentinel. Linearizing an operation unlinks its call and return nodes;
    backtracking relinks them in reverse order (dancing links).
    """

    nxt: list[int]
    prv: list[int]
    rnxt: list[int]
    rprv: list[int]
    op_of: list[int]
    match: list[int]
    head: list[int]

    def earliest_return(self) -> int:
        """The node of the earliest return not yet linearized."""
        return self.rnxt[len(self.rnxt) - 2]

    def calls_before_earliest_return(self, component: int) -> list[int]:
        """The call nodes on ``component`` that precede its earliest pending
        return, which is the earliest of all when ``component`` is the one
        that return is on."""
        nxt, match, found = self.nxt, self.match, []
        node = nxt[self.head[component]]
        while match[node] != _RETURN:
            found.append(node)
            node = nxt[node]
        return found

    def take(self, node: int) -> int:
        """Unlink the events of the call at ``node``; 1 if its outcome is known."""
        nxt, prv = self.nxt, self.prv
        nxt[prv[node]], prv[nxt[node]] = nxt[node], prv[node]
        ret_node = self.match[node]
        if ret_node < 0:
            return 0
        rnxt, rprv = self.rnxt, self.rprv
        nxt[prv[ret_node]], prv[nxt[ret_node]] = nxt[ret_node], prv[ret_node]
        rnxt[rprv[ret_node]], rprv[rnxt[ret_node]] = rnxt[ret_node], rprv[ret_node]
        return 1

    def put_back(self, node: int) -> int:
        """Undo the latest :meth:`take`, of ``node``; 1 if its outcome is known."""
        nxt, prv = self.nxt, self.prv
        ret_node = self.match[node]
        known = 0
        if ret_node >= 0:
            rnxt, rprv = self.rnxt, self.rprv
            rnxt[rprv[ret_node]] = rprv[rnxt[ret_node]] = ret_node
            nxt[prv[ret_node]] = prv[nxt[ret_node]] = ret_node
            known = 1
        nxt[prv[node]] = prv[nxt[node]] = node
        return known


def _link_events(ops: Sequence[Operation], comp: Sequence[int], components: int) -> _Events:
    events = [(op.call, 0, i) for i, op in enumerate(ops)]
    events += [(op.ret, 1, i) for i, op in enumerate(ops) if op.ret is not None]
    events.sort()
    n = len(events)
    size = n + 2 * components  # then each component's head and tail
    op_of = [i for _, _, i in events] + [-1] * (2 * components)
    match = [_RETURN] * size
    nxt, prv = [-1] * size, [-1] * size
    head = [n + 2 * c for c in range(components)]
    last = list(head)  # each component's list so far ends here
    rnxt, rprv = [-1] * (n + 2), [-1] * (n + 2)
    rlast = n
    call_node: dict[int, int] = {}
    for node, (_, kind, i) in enumerate(events):
        c = comp[i]
        nxt[last[c]], prv[node], last[c] = node, last[c], node
        if kind == 0:
            call_node[i] = node
            match[node] = _NO_RETURN
        else:  # a return always sorts after its own call
            match[call_node[i]] = node
            rnxt[rlast], rprv[node], rlast = node, rlast, node
    for c in range(components):
        nxt[last[c]], prv[head[c] + 1] = head[c] + 1, last[c]
    rnxt[rlast], rprv[n + 1] = n + 1, rlast
    return _Events(nxt, prv, rnxt, rprv, op_of, match, head)


def _components(ops: Sequence[Operation], model: Model) -> tuple[list[int], list[int], list[Hashable]]:
    """Each operation's component (an int), its bit in that component's
    mask, and each component's footprint. One component, with the whole
    history's bits, unless the model gives every operation a footprint."""
    footprints = [model.footprint(op.input) for op in ops]
    if not ops or any(fp is None for fp in footprints):
        return [0] * len(ops), [1 << i for i in range(len(ops))], [None]
    index: dict[Hashable, int] = {}
    comp, bit, sizes = [], [], []
    for fp in footprints:
        c = index.setdefault(fp, len(index))
        if c == len(sizes):
            sizes.append(0)
        comp.append(c)
        bit.append(1 << sizes[c])
        sizes[c] += 1
    return comp, bit, list(index)


def _memo_key(model: Model, footprint: list[Hashable]) -> Callable[[int, int, Hashable], Hashable]:
    """How a failed configuration is remembered: by a component, its mask
    and its part of the state (the whole state when there is one component)."""
    if len(footprint) == 1:
        return lambda c, mask, state: (mask, state)
    project = model.project
    return lambda c, mask, state: (c, mask, project(state, footprint[c]))


def _search(ops: Sequence[Operation], model: Model, deadline: float | None,
            clock: Callable[[], float]) -> _Outcome:
    """Decide whether one part is linearizable, giving up past ``deadline``.

    With footprints (see :meth:`Model.footprint`) three things change, none
    of which splits the history: only candidates on the component of the
    earliest pending return are tried (the others commute with everything
    that must happen before it); a failed configuration is remembered by
    that component's operations and state alone; and backtracking jumps
    straight back to the last operation chosen on that component, past every
    other one (conflict-directed backjumping). Why each is sound is in
    docs/linearizability.md. Without footprints there is one component whose
    mask is the set of linearized operations: the plain search. The loop is
    one function on purpose: it is the hot path, and locals are Python's
    fastest storage."""
    comp, bit, footprint = _components(ops, model)
    links, key = _link_events(ops, comp, len(footprint)), _memo_key(model, footprint)
    match, op_of = links.match, links.op_of
    # Candidates are tried earliest return first (unknown outcomes last): an
    # operation that runs long is placed late unless something needs it sooner.
    try_order = [r if r >= 0 else len(match) for r in match].__getitem__
    inputs = [op.input for op in ops]
    outputs = [UNKNOWN if op.ret is None else op.output for op in ops]
    read_only = [op.ret is not None and model.read_only(op.input, op.output) for op in ops]
    masks, known_left = [0] * len(footprint), sum(op.ret is not None for op in ops)
    step, state, steps, doomed = model.step, model.init(), 0, False
    failed: set[Hashable] = set()
    # (call node linearized, state before, read-only, the candidates it was one of, next one)
    stack: list[tuple[int, Hashable, bool, list[int], int]] = []
    failure: _Outcome | None = None
    c = comp[op_of[links.earliest_return()]] if known_left else 0
    while known_left:
        candidates = links.calls_before_earliest_return(c)  # a new configuration
        candidates.sort(key=try_order)
        at = 0
        while True:
            steps += 1
            if not steps & _CLOCK_EVERY and deadline is not None and clock() >= deadline:
                return _Outcome(UNKNOWN_VERDICT)
            if doomed or at == len(candidates):
                if not doomed and (failure is None or len(stack) > len(failure.prefix)):
                    failure = _dead_end(stack, state, links, candidates, inputs, outputs, step) or failure
                # This configuration fails, and component c alone explains it. So
                # does every configuration back to the last one that linearized
                # an op on c by choice: the ops linearized since left c as it was.
                doomed = False
                failed.add(key(c, masks[c], state))
                while True:
                    if not stack:
                        assert failure is not None  # the first backtrack is always at a return
                        return failure
                    node, state, committed, candidates, at = stack.pop()
                    i = op_of[node]
                    masks[comp[i]] ^= bit[i]
                    known_left += links.put_back(node)
                    if comp[i] == c:
                        if not committed:
                            break
                        failed.add(key(c, masks[c], state))
                continue
            node = candidates[at]
            at += 1
            i = op_of[node]
            legal, new_state = step(state, inputs[i], outputs[i])
            # An unknown outcome that changes nothing here may as well not happen here.
            if not legal or (match[node] == _NO_RETURN and new_state == state):
                continue
            new_mask = masks[c] | bit[i]
            if key(c, new_mask, new_state) in failed:
                # A committed read-only op leads to a failed configuration: so does this one.
                doomed = read_only[i]
                continue
            stack.append((node, state, read_only[i], candidates, at))
            masks[c], state = new_mask, new_state
            known_left -= links.take(node)
            if known_left and comp[op_of[links.earliest_return()]] != c:
                c = comp[op_of[links.earliest_return()]]  # a new blocking component
                doomed = key(c, masks[c], state) in failed
            break
    return _Outcome(LINEARIZABLE, prefix=[op_of[n] for n, *_ in stack], state=state)


def _dead_end(stack: list[tuple[int, Hashable, bool, list[int], int]], state: Hashable,
              links: _Events, candidates: list[int], inputs: list[Any], outputs: list[Any],
              step: Callable[[Hashable, Any, Any], tuple[bool, Hashable]]) -> _Outcome | None:
    """The dead end after ``stack``, where none of ``candidates`` (call
    nodes) could be linearized before the earliest pending return; None
    unless every one with a known outcome is illegal in ``state``, so that
    the report never claims more than the model says. (A legal one may have
    been passed over because the configuration it leads to is known to fail.
    The first dead end of a search is always of the kind reported.)"""
    op_of, match = links.op_of, links.match
    known = [op_of[n] for n in candidates if match[n] >= 0]  # unknown outcomes never have to be placed
    if any(step(state, inputs[i], outputs[i])[0] for i in known):
        return None
    return _Outcome(NOT_LINEARIZABLE, prefix=[op_of[n] for n, *_ in stack], state=state,
                    blocking=op_of[links.earliest_return()], candidates=known)


# --- Checking a history ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What :func:`check` concluded. For a violation, ``failed_partition``
    is the part that failed, ``longest_prefix`` the longest linearizable
    prefix of it that was found (in linearization order), ``state`` the
    model state after it, and ``unplaceable`` the pending operations none of
    which can take effect next; ``blocking`` is the one among them that
    returns first, so had to take effect by then."""

    verdict: Verdict
    model: Model = field(repr=False, compare=False)
    operations: int
    partitions: int
    partitions_checked: int
    elapsed_s: float
    failed_partition: tuple[Operation, ...] = ()
    longest_prefix: tuple[Operation, ...] = ()
    state: Hashable = None
    unplaceable: tuple[Operation, ...] = ()
    blocking: Operation | None = None

    def explain(self, prefix_shown: int = 10) -> str:
        """A readable account of the verdict; for a violation, the last
        ``prefix_shown`` operations of the longest prefix and the operations
        that cannot be placed after it."""
        head = (f"{self.verdict}: {self.operations} operations in {self.partitions} "
                f"part(s), {self.partitions_checked} checked, {self.elapsed_s:.2f} s")
        if self.verdict == UNKNOWN_VERDICT:
            return head + "\ntime budget exhausted before a verdict; no violation found so far"
        if self.verdict == LINEARIZABLE:
            return head
        return head + "\n" + self._explain_violation(prefix_shown)

    def describe_op(self, op: Operation) -> str:
        """One line naming ``op``: its client, what it did and when."""
        ret = "?" if op.ret is None else f"{op.ret:g}"
        return f"client {op.client:<4} {self.model.describe(op):<40} [{op.call:g} .. {ret}]"

    def _explain_violation(self, prefix_shown: int) -> str:
        model = self.model
        part = self.failed_partition
        lines = [f"failing part: {model.describe_partition(part)} ({len(part)} operations)",
                 f"longest linearizable prefix: {len(self.longest_prefix)} operations"
                 + (f", the last {prefix_shown}:" if len(self.longest_prefix) > prefix_shown else ":")]
        start = max(0, len(self.longest_prefix) - prefix_shown)
        for n, op in enumerate(self.longest_prefix[start:], start=start + 1):
            lines.append(f"  {n:>5}. {self.describe_op(op)}")
        lines.append(f"state after it: {model.describe_state(self.state)}")
        lines.append("none of these can take effect next (each is illegal in that state):")
        for op in self.unplaceable:
            mark = "   <- returns first" if op is self.blocking else ""
            lines.append(f"         {self.describe_op(op)}{mark}")
        return "\n".join(lines)


def check(ops: Sequence[Operation], model: Model, timeout_s: float | None = None, *,
          clock: Callable[[], float] = time.monotonic) -> CheckResult:
    """Whether ``ops`` is linearizable with respect to ``model``.

    Parts are searched smallest first and the first failing part decides.
    Past ``timeout_s`` (measured with ``clock``, injectable for tests) the
    verdict is "unknown" unless a part has already failed: never a guess.
    Raises ValueError on an operation that returns before its call.
    """
    start = clock()
    deadline = None if timeout_s is None else start + timeout_s
    for op in ops:
        if op.ret is not None and op.ret < op.call:
            raise ValueError(f"operation returns before it is called: {op}")
    parts = sorted(model.partition(list(ops)), key=len)
    checked = 0
    for part in parts:
        outcome = (_Outcome(UNKNOWN_VERDICT) if deadline is not None and clock() >= deadline
                   else _search(part, model, deadline, clock))
        if outcome.verdict != LINEARIZABLE:
            return _result(outcome, model, len(ops), len(parts), checked, clock() - start, part)
        checked += 1
    return CheckResult(LINEARIZABLE, model, len(ops), len(parts), checked, clock() - start)


def _result(outcome: _Outcome, model: Model, n_ops: int, n_parts: int, checked: int,
            elapsed_s: float, part: list[Operation]) -> CheckResult:
    if outcome.verdict == UNKNOWN_VERDICT:
        return CheckResult(UNKNOWN_VERDICT, model, n_ops, n_parts, checked, elapsed_s)
    return CheckResult(
        NOT_LINEARIZABLE, model, n_ops, n_parts, checked + 1, elapsed_s,
        failed_partition=tuple(part),
        longest_prefix=tuple(part[i] for i in outcome.prefix),
        state=outcome.state,
        unplaceable=tuple(part[i] for i in outcome.candidates),
        blocking=part[outcome.blocking] if outcome.blocking >= 0 else None)
