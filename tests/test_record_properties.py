"""Property-based tests of the record state machine (:class:`KVStateMachine`).

Hypothesis draws histories of record commands over a small alphabet (three
names, one of them spelled two ways; owners ``a``, ``b``, open and none;
sequence numbers 0-3; two TSIG keys, two MACs, three parts) so that owners
collide, uploads go stale and signed messages come again. Every apply is
checked against :class:`Model`, the rules written out here, and against
invariants that need no model:

* a ``record_set`` claims a free name (ZONE_FULL once the zone holds
  ``max_names`` > 0 names) and updates a held one only for its owner with a
  sequence number not older than the stored one (else OWNED, STALE, or OPEN
  for an owner meeting an open name); ``record_delete`` only by the owner;
  ``record_expire`` only a name last changed before ``older_than_ms``; a
  refused op changes no record and not the serial; a held name never
  changes owner and its sequence number never goes down;
* the serial grows by exactly one per change, and only then;
* a command applied again with the same (client, seq) gets its first
  result and changes nothing (an older one: OK, and changes nothing);
* a signed op whose (key, Time Signed, MAC, part) was taken, or whose Time
  Signed is older than its key's latest, is REPLAYED and changes nothing;
* a snapshot, through the real codec, restored into a fresh machine holds
  the same records, serial, sessions and signed state, encodes to the same
  bytes, and both machines answer the same later commands alike.

Runs are deterministic (``derandomize=True``, no example database). A
failure prints the shrunk history (``steps=[Write(...), Retry(...)]``), and
the same command replays it::

    .venv/bin/python -m pytest tests/test_record_properties.py

The last two tests break a rule on purpose and check that the properties
find a counterexample.
"""

from __future__ import annotations

import collections
import dataclasses
import ipaddress
import itertools
from typing import Any, Callable, NamedTuple

import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as st

from mydns_lab import codec
from mydns_lab.core.messages import Snapshot
from mydns_lab.protocol import Command, Outcome, Record, RecordOp, Status
from mydns_lab.raftkv import KVStateMachine, Result
from mydns_lab.records import OPEN_OWNER, json_owner

SETTINGS = settings(max_examples=600, derandomize=True, deadline=None, database=None)
SNAPSHOT_SETTINGS = settings(SETTINGS, max_examples=300)   # each example is two histories
FIND_SETTINGS = settings(SETTINGS, max_examples=2_000)

NAMES = ("alpha", "beta", "Beta", "gamma")   # "Beta" is stored as "beta"
OWNERS = {"a": json_owner("token-a"), "b": json_owner("token-b"), "open": OPEN_OWNER, "": ""}
"""Short names in the histories for the owners in the ops ("": none, refused)."""
ADDRESSES = ((("192.0.2.9",), ()), ((), ("2001:db8::a",)),
             # repeated, and out of order as text (canonical order is by value)
             (("192.0.2.10", "192.0.2.9", "192.0.2.9"), ("2001:db8::a", "2001:db8::1")))
"""(ipv4, ipv6) of a set."""
SIGNED = tuple(itertools.product(("k1", "k2"), range(3), ("m1", "m2"), range(3)))
CHANGES = {Outcome.CLAIMED: (False, True), Outcome.UPDATED: (True, True),
           Outcome.DELETED: (True, False), Outcome.EXPIRED: (True, False)}
"""Each outcome that changes a record: (held before, held after)."""

Stamp = tuple[str, int, str, int]
"""A TSIG stamp: (key name, Time Signed, MAC, part)."""
Held = tuple[str, int, tuple[str, ...], int]
"""What the model keeps per name: (owner, seq, addresses, updated_ms)."""


# --- the histories hypothesis draws ----------------------------------------------------------

class _ShortRepr:
    """Shown as a constructor call naming only the fields that differ from
    their defaults, so a counterexample reads as a short script."""

    def __repr__(self) -> str:
        shown = [repr(getattr(self, f.name)) if f.default is dataclasses.MISSING
                 else f"{f.name}={getattr(self, f.name)!r}"
                 for f in dataclasses.fields(self)  # type: ignore[arg-type]
                 if getattr(self, f.name) != f.default]
        return f"{type(self).__name__}({', '.join(shown)})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


@dataclasses.dataclass(frozen=True, repr=False)
class Write(_ShortRepr):
    """A new command from ``client``: ``kind`` of ``name`` by ``owner`` (a
    key of :data:`OWNERS`), proposed at ``time_ms``; the harness gives it
    the client's next command seq."""

    kind: str
    name: str
    client: int = 1
    owner: str = ""
    seq: int = 0
    ipv4: tuple[str, ...] = ()
    ipv6: tuple[str, ...] = ()
    max_names: int = 0
    older_than_ms: int = 0
    stamp: Stamp | None = None
    time_ms: int = 0

    def command(self, command_seq: int) -> Command:
        key, time_s, mac, part = self.stamp or ("", 0, "", 0)
        op = RecordOp(self.kind, self.name, self.ipv4, self.ipv6, owner=OWNERS[self.owner],
                      seq=self.seq, max_names=self.max_names, older_than_ms=self.older_than_ms,
                      tsig_key=key, tsig_time=time_s, tsig_mac=mac, tsig_part=part)
        return Command(self.client, command_seq, op, self.time_ms)


@dataclasses.dataclass(frozen=True, repr=False)
class Retry(_ShortRepr):
    """The command sent ``back`` commands before the newest (modulo how
    many were sent) applied again: a clerk's retry, or a late duplicate."""

    back: int


Step = Write | Retry


def _ops() -> dict[str, tuple[Write | Retry, ...]]:
    """Per kind, every op over the alphabet, simplest first (hypothesis
    shrinks towards the start); client, time and stamp are drawn apart.
    Sets with no owner or no address (refused as invalid) are a few among
    many."""
    owners = [owner for owner in OWNERS if owner]
    sets = tuple(Write("record_set", name, owner=owner, seq=seq, ipv4=ipv4, ipv6=ipv6,
                       max_names=max_names)
                 for max_names, (ipv4, ipv6), seq, owner, name
                 in itertools.product((0, 1, 2), ADDRESSES, range(4), owners, NAMES))
    sets += tuple(Write("record_set", name, owner=owner, seq=1, ipv4=ipv4)
                  for owner, ipv4 in [("", ("192.0.2.9",)), ("a", ())] for name in NAMES)
    deletes = tuple(Write("record_delete", name, owner=owner)
                    for owner, name in itertools.product(OWNERS, NAMES))
    expires = tuple(Write("record_expire", name, older_than_ms=older_than_ms)
                    for older_than_ms, name in itertools.product(range(6), NAMES))
    return {"record_set": sets, "record_delete": deletes, "record_expire": expires,
            "retry": tuple(Retry(back) for back in range(4))}


OPS = {kind: st.sampled_from(ops) for kind, ops in _ops().items()}
KINDS = st.sampled_from(("record_set", "record_delete", "record_set", "record_expire", "retry"))
"""Sets twice as often as the others."""
STAMPS = st.integers(-len(SIGNED), len(SIGNED) - 1).map(lambda i: SIGNED[i] if i < 0 else None)
"""Half the sets and deletes are signed; unsigned is the simplest."""
CLIENT_TIMES = st.sampled_from(tuple(itertools.product(range(1, 4), range(5))))


@st.composite
def steps(draw: st.DrawFn) -> Step:
    """One step of a history. Each draws four choices whatever it turns out
    to be (an op drawn whole from :data:`OPS`), few enough for the shrinker
    to delete a step in one go: a counterexample shrinks to the steps it
    needs."""
    kind = draw(KINDS)
    op, stamp, (client, time_ms) = draw(OPS[kind]), draw(STAMPS), draw(CLIENT_TIMES)
    if isinstance(op, Retry):
        return op
    return dataclasses.replace(op, client=client, time_ms=time_ms,
                               stamp=None if kind == "record_expire" else stamp)


STEPS = st.lists(st.lists(steps(), max_size=10), max_size=8).map(
    lambda bursts: [step for burst in bursts for step in burst])
"""Histories, made of bursts: hypothesis's lists hold five items on
average, too few for names to fill and go stale."""
SHORT_STEPS = st.lists(steps(), max_size=10)
"""Short histories, for the searches of the tests that break a rule on
purpose: they find and shrink a counterexample in a second or two."""


# --- the reference model ---------------------------------------------------------------------

class Model:
    """The rules as the issue and the docstrings state them: what each
    command should answer and leave behind."""

    def __init__(self) -> None:
        self.records: dict[str, Held] = {}
        self.serial = 0
        self.sessions: dict[int, tuple[int, str, str]] = {}  # client -> (seq, status, outcome)
        self.latest: dict[str, int] = {}                     # TSIG key -> latest Time Signed taken
        self.taken: set[Stamp] = set()                       # every stamp accepted

    def apply(self, cmd: Command) -> tuple[str, str] | None:
        """(status, outcome) of a new command; None for a duplicate (a
        seq not above its client's last)."""
        last = self.sessions.get(cmd.client_id)
        if last is not None and cmd.seq <= last[0]:
            return None
        assert isinstance(cmd.op, RecordOp)
        status, outcome = self._execute(cmd.op, cmd.time_ms)
        self.sessions[cmd.client_id] = (cmd.seq, status, outcome)
        return status, outcome

    def _execute(self, op: RecordOp, time_ms: int) -> tuple[str, str]:
        name = op.name.lower()
        held = self.records.get(name)
        if op.kind == "record_expire":
            if held is None or held[3] >= op.older_than_ms:
                return Status.OK, Outcome.NONE
            return self._change(name, None, Outcome.EXPIRED)
        if op.kind == "record_set" and not op.ipv4 and not op.ipv6:
            return Status.ERROR, Outcome.NONE    # invalid: refused before its stamp is looked at
        if op.tsig_key and not self._take((op.tsig_key, op.tsig_time, op.tsig_mac, op.tsig_part)):
            return Status.REPLAYED, Outcome.NONE
        if not op.owner:
            return Status.ERROR, Outcome.NONE
        addresses = (tuple(sorted(set(op.ipv4), key=ipaddress.ip_address))
                     + tuple(sorted(set(op.ipv6), key=ipaddress.ip_address)))
        if held is None:
            if op.kind == "record_delete":
                return Status.ERROR, Outcome.NONE
            if 0 < op.max_names <= len(self.records):
                return Status.ZONE_FULL, Outcome.NONE
            return self._change(name, (op.owner, op.seq, addresses, time_ms), Outcome.CLAIMED)
        if held[0] != op.owner:
            return (Status.OPEN if held[0] == OPEN_OWNER else Status.OWNED), Outcome.NONE
        if op.kind == "record_delete":
            return self._change(name, None, Outcome.DELETED)
        if op.seq < held[1]:
            return Status.STALE, Outcome.NONE
        return self._change(name, (op.owner, op.seq, addresses, time_ms), Outcome.UPDATED)

    def _change(self, name: str, held: Held | None, outcome: str) -> tuple[str, str]:
        if held is None:
            del self.records[name]
        else:
            self.records[name] = held
        self.serial += 1
        return Status.OK, outcome

    def _take(self, stamp: Stamp) -> bool:
        """RFC 8945 5.2.3: refuse a Time Signed older than the key's latest,
        and, at the latest, a part of a message at or below one taken (its
        parts run in order; a replay starts again at part 0)."""
        key, time_s, mac, part = stamp
        latest = self.latest.get(key, -1)
        if time_s < latest:
            return False
        if time_s == latest and any(taken[:3] == (key, time_s, mac) and taken[3] >= part
                                    for taken in self.taken):
            return False
        self.latest[key] = time_s
        self.taken.add(stamp)
        return True

    def signed(self) -> dict[str, tuple[int, dict[str, int]]]:
        """The store's replicated form of what was taken: per key, its latest
        Time Signed and, per MAC taken then, the last part."""
        out: dict[str, tuple[int, dict[str, int]]] = {}
        for key, time_s, mac, part in sorted(self.taken):
            if time_s == self.latest[key]:
                out.setdefault(key, (time_s, {}))[1][mac] = part
        return out


# --- the harness -----------------------------------------------------------------------------

class State(NamedTuple):
    """A copy of a machine's state, to compare before and after."""

    records: dict[str, Record]
    serial: int
    sessions: dict[int, tuple[int, Result]]
    signed: dict[str, tuple[int, dict[str, int]]]
    data: dict[str, str]
    changes: tuple[tuple[int, str], ...]


def state_of(machine: KVStateMachine) -> State:
    return State(dict(machine.records), machine.serial, dict(machine.sessions),
                 {key: (time_s, dict(parts)) for key, (time_s, parts) in machine.signed.items()},
                 dict(machine.data), tuple(machine.changes))


def replicated(machine: KVStateMachine) -> State:
    """What a snapshot carries: the state less the watch log (derived)."""
    return state_of(machine)._replace(changes=())


class Harness:
    """A :class:`KVStateMachine` and the :class:`Model` fed the same
    commands, as a log would (one index each); every apply is checked."""

    def __init__(self) -> None:
        self.machine = KVStateMachine(codec)
        self.model = Model()
        self.index = 0
        self.sent: list[Command] = []
        self.first: dict[tuple[int, int], Result] = {}   # (client, seq) -> its first result
        self.seqs: collections.Counter[int] = collections.Counter()

    def command(self, step: Step) -> Command | None:
        """The command ``step`` sends (None: a retry before anything was sent)."""
        if isinstance(step, Retry):
            return self.sent[-1 - step.back % len(self.sent)] if self.sent else None
        self.seqs[step.client] += 1
        cmd = step.command(self.seqs[step.client])
        self.sent.append(cmd)
        return cmd

    def apply(self, cmd: Command) -> tuple[Result, bool]:
        before = state_of(self.machine)
        last = self.model.sessions.get(cmd.client_id)
        self.index += 1
        result, effective = self.machine.apply(self.index, cmd)
        expected = self.model.apply(cmd)
        after = state_of(self.machine)
        if expected is None:
            # The client's last command gets its first result again; an older one, a plain OK.
            cached = (self.first[cmd.client_id, cmd.seq] if last and last[0] == cmd.seq
                      else Result(Status.OK))
            assert (result, effective) == (cached, False), f"{cmd} again: {result}, not {cached}"
            assert after == before, f"{cmd} applied again changed the state"
            return result, effective
        assert effective, f"{cmd} was taken for a duplicate"
        self.first[cmd.client_id, cmd.seq] = result
        assert isinstance(cmd.op, RecordOp)
        assert (result.status, result.outcome) == expected, (
            f"{cmd.op} answered {result}; the rules say {expected}")
        check_rules(cmd.op, result, before, after)
        held = {name: (r.owner, r.seq, r.ipv4 + r.ipv6, r.updated_ms)
                for name, r in self.machine.records.items()}
        assert held == self.model.records, f"after {cmd.op}"
        assert after.serial == self.model.serial
        sessions = {c: (s, r.status, r.outcome) for c, (s, r) in after.sessions.items()}
        assert sessions == self.model.sessions, f"after {cmd.op}"
        assert after.signed == self.model.signed(), f"after {cmd.op}"
        return result, effective


def check_rules(op: RecordOp, result: Result, before: State, after: State) -> None:
    """The invariants of one new command that need no model."""
    name = op.name.lower()
    changed = {n for n in before.records.keys() | after.records.keys()
               if before.records.get(n) != after.records.get(n)}
    if result.outcome in CHANGES:
        assert result.status == Status.OK
        assert changed <= {name}, f"{op} changed {changed}"
        assert (name in before.records, name in after.records) == CHANGES[result.outcome]
        # Invariant: the serial grows by exactly one per change, logged for watches.
        assert after.serial == before.serial + 1
        assert after.changes == before.changes + ((after.serial, name),)
    else:
        # Invariant: a refused op (or one with nothing to do) changes no record.
        assert not changed and after.serial == before.serial and after.changes == before.changes, (
            f"{op} answered {result} but changed {changed}")
    for n in before.records.keys() & after.records.keys():
        # Invariant: a held name keeps its owner, and its seq never goes down.
        assert after.records[n].owner == before.records[n].owner, f"{op} took {n!r}"
        assert after.records[n].seq >= before.records[n].seq, f"{op} lowered the seq of {n!r}"
    assert all(r.owner for r in after.records.values()), "a record with no owner"
    if result.status == Status.REPLAYED:
        assert after.signed == before.signed, f"the refused stamp of {op} was recorded"


def check_history(steps: list[Step]) -> Harness:
    """Run ``steps`` through a checked :class:`Harness`; AssertionError names
    the first command that breaks a rule."""
    harness = Harness()
    for step in steps:
        cmd = harness.command(step)
        if cmd is not None:
            harness.apply(cmd)
    return harness


def check_snapshot(prefix: list[Step], suffix: list[Step]) -> None:
    """Snapshot after ``prefix``, restore into a fresh machine, then feed
    both ``suffix``: same state and same answers throughout."""
    harness = check_history(prefix)
    original = harness.machine
    data = original.snapshot()
    copy = KVStateMachine(codec)
    copy.restore(Snapshot(harness.index, 1, data))
    at_snapshot = replicated(copy)
    assert at_snapshot == replicated(original), "the restored machine differs"
    assert copy.applied_index == original.applied_index
    assert copy.snapshot() == data, "the restored machine's snapshot has other bytes"
    for step in suffix:
        cmd = harness.command(step)
        if cmd is None:
            continue
        expected = harness.apply(cmd)
        assert copy.apply(harness.index, cmd) == expected, f"{cmd} answered otherwise after restore"
        assert replicated(copy) == replicated(original), f"the machines differ after {cmd}"
    # Restoring over a machine that holds other state (a lagging follower) gives the same.
    copy.restore(Snapshot(harness.index, 1, data))
    assert replicated(copy) == at_snapshot and not copy.changes


# --- the properties --------------------------------------------------------------------------

@SETTINGS
@given(steps=STEPS)
def test_any_history_keeps_the_record_rules(steps: list[Step]) -> None:
    check_history(steps)


@SNAPSHOT_SETTINGS
@given(prefix=STEPS, suffix=STEPS)
def test_a_restored_snapshot_is_the_same_machine(prefix: list[Step], suffix: list[Step]) -> None:
    check_snapshot(prefix, suffix)


# --- the properties catch broken rules -------------------------------------------------------

def breaks(check: Callable[..., object], *args: Any) -> bool:
    try:
        check(*args)
    except AssertionError:
        return True
    return False


def test_the_rules_catch_an_older_upload_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget STALE (an upload older than the stored one overwrites it):
    the search finds it and shrinks it to a claim and an older update."""
    execute = KVStateMachine._execute_record

    def accepts_older(self: KVStateMachine, op: RecordOp, time_ms: int,
                      checked: bool = False) -> Result:
        held = self.records.get(op.name.lower())
        if op.kind == "record_set" and held is not None and held.owner == op.owner:
            op = dataclasses.replace(op, seq=max(op.seq, held.seq))
        return execute(self, op, time_ms, checked)

    monkeypatch.setattr(KVStateMachine, "_execute_record", accepts_older)
    found = find(SHORT_STEPS, lambda steps: breaks(check_history, steps), settings=FIND_SETTINGS)
    with pytest.raises(AssertionError, match=r"the rules say \('stale'"):
        check_history(found)
    claim, older = found
    assert isinstance(claim, Write) and isinstance(older, Write), found
    assert (older.kind, older.name, older.owner) == (claim.kind, claim.name, claim.owner), found
    assert older.seq < claim.seq, found
    monkeypatch.undo()
    check_history(found)    # the real rule passes it


def test_the_snapshot_check_catches_forgotten_signed_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """A restore that drops the TSIG replay state: the search finds it with
    one signed write before the snapshot."""
    restore = KVStateMachine.restore

    def forgets_signed(self: KVStateMachine, snapshot: Snapshot) -> None:
        restore(self, snapshot)
        self.signed = {}

    monkeypatch.setattr(KVStateMachine, "restore", forgets_signed)
    found = find(st.tuples(SHORT_STEPS, SHORT_STEPS), lambda steps: breaks(check_snapshot, *steps),
                 settings=FIND_SETTINGS)
    with pytest.raises(AssertionError, match="the restored machine differs"):
        check_snapshot(*found)
    prefix, suffix = found
    assert len(prefix) == 1 and suffix == [], found
    assert isinstance(prefix[0], Write) and prefix[0].stamp is not None, found
    monkeypatch.undo()
    check_snapshot(*found)
