"""The linearizability checker: hand-made histories with known answers, a
cross-check against a brute-force search, the CLI, and the third-party
porcupine fixtures with their published verdicts."""

from __future__ import annotations

import itertools
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mydns_lab.linearizability.formats import (HistoryFormatError, parse_jepsen_register,
                                               parse_porcupine_kv)
from mydns_lab.linearizability.models import (KV_MODEL, REGISTER_MODEL, UNKNOWN, KvModel, Model,
                                              Operation)
from mydns_lab.linearizability.search import LINEARIZABLE, NOT_LINEARIZABLE, UNKNOWN_VERDICT, check
from mydns_lab.linearizability.timeline import write_html_timeline

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures" / "porcupine"
NO_FIXTURES = (f"porcupine fixtures not found at {FIXTURES}; "
               "check out ../shared beside the clone to run these")


def op(client: int, call: float, ret: float | None, input: Any, output: Any = None) -> Operation:
    return Operation(client, call, ret, input, output)


def write(client: int, call: float, ret: float | None, value: Any) -> Operation:
    return op(client, call, ret, ("write", value))


def read(client: int, call: float, ret: float | None, value: Any) -> Operation:
    return op(client, call, ret, ("read",), value)


def cas(client: int, call: float, ret: float | None, old: Any, new: Any, applied: Any) -> Operation:
    return op(client, call, ret, ("cas", old, new), applied)


# --- Hand-made register histories -------------------------------------------------


def test_sequential_history_is_linearizable() -> None:
    ops = [write(0, 0, 1, 1), read(0, 2, 3, 1), cas(1, 4, 5, 1, 2, True),
           read(1, 6, 7, 2), cas(0, 8, 9, 1, 3, False), read(0, 10, 11, 2)]
    assert check(ops, REGISTER_MODEL).verdict == LINEARIZABLE


def test_stale_read_is_not_linearizable_and_is_named() -> None:
    stale = read(2, 4, 5, 1)
    ops = [write(0, 0, 1, 1), write(1, 2, 3, 2), stale]
    result = check(ops, REGISTER_MODEL)
    assert result.verdict == NOT_LINEARIZABLE
    assert result.blocking == stale
    assert result.unplaceable == (stale,)
    assert [o.input for o in result.longest_prefix] == [("write", 1), ("write", 2)]
    assert result.state == 2
    text = result.explain()
    assert "read -> 1" in text and "returns first" in text and "state after it: 2" in text


def test_concurrent_writes_may_take_effect_in_either_order() -> None:
    both = [write(0, 0, 10, 1), write(1, 0, 10, 2)]
    assert check(both + [read(2, 11, 12, 1)], REGISTER_MODEL).verdict == LINEARIZABLE
    assert check(both + [read(2, 11, 12, 2)], REGISTER_MODEL).verdict == LINEARIZABLE
    # But not both orders at once: after both returned, the value is settled.
    flip = both + [read(2, 11, 12, 1), read(2, 13, 14, 2)]
    assert check(flip, REGISTER_MODEL).verdict == NOT_LINEARIZABLE


def test_read_concurrent_with_write_sees_old_or_new_but_never_goes_back() -> None:
    ops = [write(0, 0, 10, 1), read(1, 1, 2, None), read(1, 3, 4, 1)]
    assert check(ops, REGISTER_MODEL).verdict == LINEARIZABLE
    back = [write(0, 0, 10, 1), read(1, 1, 2, 1), read(1, 3, 4, None)]
    assert check(back, REGISTER_MODEL).verdict == NOT_LINEARIZABLE


def test_touching_operations_count_as_concurrent() -> None:
    # The read's call equals the write's return: either order is allowed.
    assert check([write(0, 0, 5, 1), read(1, 5, 6, None)], REGISTER_MODEL).verdict == LINEARIZABLE
    assert check([write(0, 0, 5, 1), read(1, 6, 7, None)], REGISTER_MODEL).verdict == NOT_LINEARIZABLE


def test_unknown_write_that_must_have_happened() -> None:
    ops = [write(0, 0, None, 7), read(1, 5, 6, 7)]
    assert check(ops, REGISTER_MODEL).verdict == LINEARIZABLE


def test_unknown_write_that_must_never_have_happened() -> None:
    # The write's outcome is unknown and every later read says absent: it is
    # linearizable only if the write never took effect (within the history).
    ops = [write(0, 0, None, 7), read(1, 5, 6, None), read(1, 7, 8, None)]
    assert check(ops, REGISTER_MODEL).verdict == LINEARIZABLE


def test_unknown_operations_only_never_block_the_search() -> None:
    ops = [write(n, n, None, n) for n in range(40)] + [cas(99, 0, None, 3, 4, "ignored")]
    assert check(ops, REGISTER_MODEL).verdict == LINEARIZABLE


def test_unknown_write_cannot_explain_a_read_before_its_call() -> None:
    ops = [read(1, 0, 1, 7), write(0, 2, None, 7)]
    result = check(ops, REGISTER_MODEL)
    assert result.verdict == NOT_LINEARIZABLE
    assert result.unplaceable == (ops[0],)


def test_unknown_output_is_ignored() -> None:
    # A cas whose reply was lost: it may have applied (read 2) or not.
    for seen in (1, 2):
        ops = [write(0, 0, 1, 1), cas(1, 2, None, 1, 2, False), read(0, 3, 4, seen)]
        assert check(ops, REGISTER_MODEL).verdict == LINEARIZABLE


def test_cas_semantics() -> None:
    assert check([cas(0, 0, 1, None, 1, True), read(0, 2, 3, 1)], REGISTER_MODEL).verdict == LINEARIZABLE
    assert check([cas(0, 0, 1, 5, 1, True)], REGISTER_MODEL).verdict == NOT_LINEARIZABLE
    assert check([write(0, 0, 1, 5), cas(0, 2, 3, 5, 1, False)], REGISTER_MODEL).verdict == NOT_LINEARIZABLE
    refused = [write(0, 0, 1, 5), cas(0, 2, 3, 4, 1, False), read(0, 4, 5, 5)]
    assert check(refused, REGISTER_MODEL).verdict == LINEARIZABLE


def test_operation_returning_before_its_call_is_rejected() -> None:
    with pytest.raises(ValueError, match="returns before it is called"):
        check([write(0, 5, 4, 1)], REGISTER_MODEL)


def test_empty_history_is_linearizable() -> None:
    assert check([], KV_MODEL).verdict == LINEARIZABLE


# --- KV model, per key and as one object ------------------------------------------


def kv(client: int, call: float, ret: float | None, *input: Any, out: Any = None) -> Operation:
    return op(client, call, ret, tuple(input), out)


@pytest.mark.parametrize("model", [KvModel(), KvModel(partition=False)], ids=["per-key", "one-object"])
def test_kv_semantics(model: KvModel) -> None:
    ops = [kv(0, 0, 1, "put", "a", "x"), kv(0, 2, 3, "append", "a", "y"),
           kv(1, 4, 5, "get", "a", out="xy"), kv(1, 6, 7, "get", "b", out=""),
           kv(0, 8, 9, "cas", "a", "xy", "z", out=True), kv(0, 10, 11, "cas", "a", "xy", "w", out=False),
           kv(1, 12, 13, "cas", "b", "", "q", out=True), kv(1, 14, 15, "delete", "a"),
           kv(0, 16, 17, "get", "a", out=""), kv(0, 18, 19, "get", "b", out="q")]
    assert check(ops, model).verdict == LINEARIZABLE
    wrong = ops + [kv(2, 20, 21, "get", "a", out="z")]
    result = check(wrong, model)
    assert result.verdict == NOT_LINEARIZABLE
    assert result.blocking == wrong[-1]


def test_kv_unknown_append_is_skipped_when_it_must_not_have_happened() -> None:
    ops = [kv(0, 0, None, "append", "k", "x"), kv(1, 1, 2, "get", "k", out=""),
           kv(1, 3, 4, "append", "k", "y"), kv(1, 5, 6, "get", "k", out="y")]
    assert check(ops, KV_MODEL).verdict == LINEARIZABLE
    assert check(ops + [kv(1, 7, 8, "get", "k", out="yx")], KV_MODEL).verdict == LINEARIZABLE


def test_kv_partitions_report_the_failing_key() -> None:
    ops = [kv(0, 0, 1, "put", "a", "1"), kv(0, 2, 3, "get", "a", out="1"),
           kv(1, 0, 1, "put", "b", "1"), kv(1, 2, 3, "get", "b", out="2")]
    result = check(ops, KV_MODEL)
    assert result.verdict == NOT_LINEARIZABLE
    assert result.partitions == 2
    assert "failing part: key 'b'" in result.explain()


def test_kv_one_object_state_is_canonical() -> None:
    model = KvModel(partition=False)
    _, s1 = model.step(model.init(), ("put", "b", "1"), None)
    _, s1 = model.step(s1, ("put", "a", "2"), None)
    _, s2 = model.step(model.init(), ("put", "a", "2"), None)
    _, s2 = model.step(s2, ("put", "b", "1"), None)
    assert s1 == s2 == (("a", "2"), ("b", "1"))
    assert model.step(s1, ("delete", "a"), None)[1] == (("b", "1"),)
    assert model.step(s1, ("get", "c"), UNKNOWN) == (True, s1)


# --- Time budget -------------------------------------------------------------------


def hard_violation(writers: int = 14) -> list[Operation]:
    """Many concurrent writes, then a read of a value nobody wrote: proving
    it takes the search through every subset of the writes."""
    return [write(n, 0, 10, n) for n in range(writers)] + [read(99, 11, 12, -1)]


def test_zero_timeout_gives_unknown() -> None:
    assert check(hard_violation(), REGISTER_MODEL, timeout_s=0).verdict == UNKNOWN_VERDICT


def test_deadline_during_the_search_gives_unknown_not_a_guess() -> None:
    ticks = itertools.count()  # a clock that moves one second per look
    result = check(hard_violation(), REGISTER_MODEL, timeout_s=3, clock=lambda: next(ticks))
    assert result.verdict == UNKNOWN_VERDICT
    assert "time budget exhausted" in result.explain()
    assert check(hard_violation(), REGISTER_MODEL).verdict == NOT_LINEARIZABLE


# --- Cross-check against brute force -----------------------------------------------


def brute_force(ops: list[Operation], model: Model) -> bool:
    """Try every order (and every subset of unknown outcomes) that respects
    real time, part by part, with no memo and no pruning: slow, obviously
    right."""
    def minimal(o: Operation, rest: list[Operation]) -> bool:
        return all(p.ret is None or p.ret >= o.call for p in rest if p is not o)

    def search(rest: list[Operation], state: Any) -> bool:
        if all(o.ret is None for o in rest):
            return True
        for o in rest:
            if minimal(o, rest):
                legal, new = model.step(state, o.input, UNKNOWN if o.ret is None else o.output)
                if legal and search([p for p in rest if p is not o], new):
                    return True
        return False

    return all(search(part, model.init()) for part in model.partition(ops))


def random_history(rng: random.Random, size: int) -> list[Operation]:
    ops = []
    for client in range(size):
        call = rng.randrange(10)
        ret = None if rng.random() < 0.2 else call + rng.randrange(4)
        kind = rng.choice(["read", "write", "cas"])
        if kind == "read":
            ops.append(read(client, call, ret, rng.choice([None, 1, 2])))
        elif kind == "write":
            ops.append(write(client, call, ret, rng.choice([1, 2])))
        else:
            ops.append(cas(client, call, ret, rng.choice([None, 1, 2]), rng.choice([1, 2]), rng.random() < 0.5))
    return ops


def random_kv_history(rng: random.Random, size: int) -> list[Operation]:
    ops = []
    for client in range(size):
        call = rng.randrange(10)
        ret = None if rng.random() < 0.2 else call + rng.randrange(4)
        key = rng.choice("ab")
        kind = rng.choice(["get", "put", "append", "cas", "delete"])
        if kind == "get":
            ops.append(kv(client, call, ret, "get", key, out=rng.choice(["", "x", "xy", "y"])))
        elif kind in ("put", "append"):
            ops.append(kv(client, call, ret, kind, key, rng.choice("xy")))
        elif kind == "cas":
            ops.append(kv(client, call, ret, "cas", key, rng.choice(["", "x"]), "y", out=rng.random() < 0.5))
        else:
            ops.append(kv(client, call, ret, "delete", key))
    return ops


@pytest.mark.parametrize("model, make", [
    (REGISTER_MODEL, random_history),
    (KvModel(), random_kv_history),
    (KvModel(partition=False), random_kv_history),
], ids=["register", "kv-per-key", "kv-one-object"])
def test_agrees_with_brute_force_on_random_histories(model: Model, make: Any) -> None:
    seed = 20240611
    rng = random.Random(seed)
    verdicts = set()
    for case in range(500):
        ops = make(rng, rng.randrange(1, 7))
        expected = LINEARIZABLE if brute_force(ops, model) else NOT_LINEARIZABLE
        got = check(ops, model).verdict
        assert got == expected, f"seed={seed} case={case}: {ops}"
        verdicts.add(got)
    assert verdicts == {LINEARIZABLE, NOT_LINEARIZABLE}


class WholeStateKv(KvModel):
    """The map as one object with no footprints: the plain search."""

    def __init__(self) -> None:
        super().__init__(partition=False)

    def footprint(self, input: Any) -> None:
        return None


def wide_kv_history(rng: random.Random, size: int, keys: str) -> list[Operation]:
    """Up to ``size`` operations on ``keys`` from overlapping clients, some
    with unknown outcomes, read values drawn mostly from what was written so
    that both verdicts are common."""
    ops: list[Operation] = []
    written = [""]
    for client in range(size):
        call = rng.randrange(3 * size)
        ret = None if rng.random() < 0.15 else call + rng.randrange(1, 8)
        key = rng.choice(keys)
        kind = rng.choice(["get", "get", "put", "append", "append", "cas"])
        if kind == "get":
            seen = rng.choice(written) + (rng.choice(written) if rng.random() < 0.3 else "")
            ops.append(kv(client, call, ret, "get", key, out=seen))
        elif kind == "cas":
            ops.append(kv(client, call, ret, "cas", key, rng.choice(written), "z", out=rng.random() < 0.5))
        else:
            value = rng.choice("uvwxy")
            written.append(value)
            ops.append(kv(client, call, ret, kind, key, value))
    return ops


@pytest.mark.parametrize("keys", ["ab", "abc", "abcd"])
def test_footprint_search_agrees_with_per_key_and_plain_search(keys: str) -> None:
    """The one-object search with footprints (component-restricted
    candidates, projected memo, backjumping) must reach the verdict of the
    per-key search and of the plain whole-state search on every history."""
    seed = 20261128
    rng = random.Random(f"{seed}-{keys}")
    per_key, one_object, plain = KvModel(), KvModel(partition=False), WholeStateKv()
    verdicts = []
    for case in range(300):
        ops = wide_kv_history(rng, rng.randrange(2, 16), keys)
        expected = check(ops, per_key).verdict
        replay = (f"seed={seed} keys={keys!r} case={case}; replay: "
                  f"pytest tests/test_linearizability.py -k 'agrees_with_per_key and {keys}'")
        result = check(ops, one_object)
        assert result.verdict == expected, f"{replay}: {ops}"
        assert check(ops, plain).verdict == expected, f"{replay}: {ops}"
        if expected == NOT_LINEARIZABLE:  # the report claims only what the model says
            assert_report_holds(result)
        verdicts.append(expected)
    assert {LINEARIZABLE, NOT_LINEARIZABLE} <= set(verdicts)
    assert min(verdicts.count(LINEARIZABLE), verdicts.count(NOT_LINEARIZABLE)) > 30


def assert_report_holds(result: Any) -> None:
    """The longest prefix replays to the reported state, in which every
    operation called unplaceable is illegal, the blocking one among them."""
    model, state = result.model, result.model.init()
    for done in result.longest_prefix:
        legal, state = model.step(state, done.input, UNKNOWN if done.ret is None else done.output)
        assert legal, f"prefix step {done} is illegal"
    assert state == result.state
    assert result.blocking in result.unplaceable
    for stuck in result.unplaceable:
        assert not model.step(state, stuck.input, stuck.output)[0], f"{stuck} is legal after the prefix"


def test_footprint_search_agrees_with_brute_force() -> None:
    seed = 20261129
    rng = random.Random(seed)
    for case in range(400):
        ops = wide_kv_history(rng, rng.randrange(2, 8), "abc")
        expected = LINEARIZABLE if brute_force(ops, WholeStateKv()) else NOT_LINEARIZABLE
        assert check(ops, KvModel(partition=False)).verdict == expected, f"seed={seed} case={case}: {ops}"


def test_footprint_search_reports_the_failing_key_and_its_candidates() -> None:
    """A violation on one key among busy others: the explanation names that
    key's operations only, and the prefix is a legal whole-object order."""
    ops = [kv(c, 0, 5, "append", k, str(c)) for c, k in enumerate("aabbcc")]
    ops += [kv(9, 6, 7, "get", "b", out="23"), kv(9, 8, 9, "get", "c", out="54"),
            kv(8, 6, 7, "get", "a", out="01"), kv(7, 10, 11, "get", "b", out="2")]
    result = check(ops, KvModel(partition=False))
    assert result.verdict == NOT_LINEARIZABLE
    assert result.blocking == ops[-1]
    assert all(op.input[1] == "b" for op in result.unplaceable)
    assert_report_holds(result)


# --- HTML timeline -----------------------------------------------------------------


def test_html_timeline_names_the_failing_operations(tmp_path: Path) -> None:
    ops = [write(0, 0, 1, 1), write(1, 2, 3, 2), read(2, 4, 5, 1), write(3, 0, None, 3)]
    result = check(ops, REGISTER_MODEL)
    path = write_html_timeline(result, tmp_path / "t.html")
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "CANNOT BE PLACED: read -&gt; 1" in page
    assert page.count('<div class="op') == len(ops)
    assert "client 3" in page and "unknown" in page
    assert "http" not in page.lower() and "<script" not in page and "<link" not in page


def test_html_timeline_refuses_a_linearizable_result(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="only a violation"):
        write_html_timeline(check([write(0, 0, 1, 1)], REGISTER_MODEL), tmp_path / "t.html")


# --- Parsers -----------------------------------------------------------------------


def test_parse_porcupine_kv() -> None:
    text = "\n".join([
        '{:process 0, :type :invoke, :f :put, :key "a", :value "x"}',
        '{:process 1, :type :invoke, :f :get, :key "a", :value nil}',
        '{:process 0, :type :ok, :f :put, :key "a", :value "x"}',
        '{:process 1, :type :ok, :f :get, :key "a", :value "x \\"q\\""}',
        '{:process 2, :type :invoke, :f :append, :key "b", :value "y"}',
        '{:process 2, :type :info, :f :append, :key "b", :value "y"}',
        '{:process 3, :type :invoke, :f :append, :key "b", :value "z"}',
        '{:process 3, :type :fail, :f :append, :key "b", :value "z"}',
        '{:process 4, :type :invoke, :f :get, :key "c", :value nil}',
    ])
    assert parse_porcupine_kv(text) == [
        Operation(0, 1, 3, ("put", "a", "x"), None),
        Operation(1, 2, 4, ("get", "a"), 'x "q"'),
        Operation(2, 5, None, ("append", "b", "y"), None),
        Operation(4, 9, None, ("get", "c"), None),
    ]


def test_parse_jepsen_register() -> None:
    text = "\n".join([
        "some noise line",
        "INFO  jepsen.util - 0\t:invoke\t:write\t3",
        "INFO  jepsen.util - 1   :invoke :cas    [3 4]",
        "INFO  jepsen.util - 0\t:ok\t:write\t3",
        "INFO  jepsen.util - 1\t:fail\t:cas\t[3 4]",
        "INFO  jepsen.util - 2\t:invoke\t:read\tnil",
        "INFO  jepsen.util - 2\t:fail\t:read\t:timed-out",
        "INFO  jepsen.util - 3\t:invoke\t:cas\t[1 2]",
        "INFO  jepsen.util - 3\t:info\t:cas\t:timed-out",
        "INFO  jepsen.util - 4\t:invoke\t:read\tnil",
        "INFO  jepsen.util - 4\t:ok\t:read\tnil",
        "INFO  jepsen.util - 5\t:invoke\t:write\t1",
    ])
    assert parse_jepsen_register(text) == [
        Operation(0, 2, 4, ("write", 3), None),
        Operation(1, 3, 5, ("cas", 3, 4), False),
        Operation(3, 8, None, ("cas", 1, 2), None),
        Operation(4, 10, 11, ("read",), None),
        Operation(5, 12, None, ("write", 1), None),
    ]


@pytest.mark.parametrize("text, message", [
    ("INFO jepsen.util - 0\t:ok\t:read\t1", "line 1: :ok :read of process 0 matches no pending"),
    ("INFO jepsen.util - 0\t:invoke\t:read\tnil\nINFO jepsen.util - 0\t:invoke\t:read\tnil",
     "line 2: process 0 invokes while its operation from line 1"),
    ("INFO jepsen.util - 0\t:invoke\t:frob\tnil", "line 1: expected :read, :write or :cas"),
    ("INFO jepsen.util - 0\t:invoke\t:cas\t3", "line 1: :cas cannot take 3"),
    ("nothing here", "no 'INFO jepsen.util"),
])
def test_parse_jepsen_errors(text: str, message: str) -> None:
    with pytest.raises(HistoryFormatError, match=message):
        parse_jepsen_register(text, "f.log")


def test_parse_kv_errors() -> None:
    with pytest.raises(HistoryFormatError, match="line 1: not a flat"):
        parse_porcupine_kv("{:process 0, :type :invoke")
    with pytest.raises(HistoryFormatError, match="line 2: unreadable value"):
        parse_porcupine_kv('\n{:process 0, :type :invoke, :f :get, :key "a\\q", :value nil}')
    with pytest.raises(HistoryFormatError, match="line 1: need :process"):
        parse_porcupine_kv('{:process 0, :type :invoke, :f :frob, :key "a", :value nil}')


# --- Command line ------------------------------------------------------------------


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mydns_lab.linearizability", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=120)


JEPSEN_OK = "INFO jepsen.util - 0\t:invoke\t:write\t1\nINFO jepsen.util - 0\t:ok\t:write\t1\n" \
            "INFO jepsen.util - 1\t:invoke\t:read\tnil\nINFO jepsen.util - 1\t:ok\t:read\t1\n"


def test_cli_linearizable_exits_0(tmp_path: Path) -> None:
    (tmp_path / "ok.log").write_text(JEPSEN_OK)
    done = run_cli("ok.log", "--format", "jepsen", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (0, "linearizable\n")


def test_cli_unknown_outcome_may_have_taken_effect(tmp_path: Path) -> None:
    """A cas whose outcome is unknown explains the read only if the model
    accepts the search's UNKNOWN output: true of the command line too, where
    the module runs as __main__ and must not get a second copy of UNKNOWN."""
    log = ("INFO jepsen.util - 0\t:invoke\t:write\t0\nINFO jepsen.util - 0\t:ok\t:write\t0\n"
           "INFO jepsen.util - 0\t:invoke\t:cas\t[0 1]\nINFO jepsen.util - 0\t:info\t:cas\t[0 1]\n"
           "INFO jepsen.util - 1\t:invoke\t:read\tnil\nINFO jepsen.util - 1\t:ok\t:read\t1\n")
    (tmp_path / "cas.log").write_text(log)
    done = run_cli("cas.log", "--format", "jepsen", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (0, "linearizable\n"), done.stdout + done.stderr


def test_cli_violation_exits_1_and_writes_the_timeline(tmp_path: Path) -> None:
    (tmp_path / "bad.log").write_text(JEPSEN_OK.replace(":ok\t:read\t1", ":ok\t:read\t2"))
    done = run_cli(str(tmp_path / "bad.log"), "--format", "jepsen", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stdout.startswith("not linearizable\n")
    assert "read -> 2" in done.stdout
    page = tmp_path / "linearizability-bad.html"
    assert f"timeline: {page}" in done.stdout
    assert "CANNOT BE PLACED" in page.read_text(encoding="utf-8")
    other = tmp_path / "elsewhere.html"
    assert run_cli("bad.log", "--format", "jepsen", "--html", str(other), cwd=tmp_path).returncode == 1
    assert other.exists()


def test_cli_timeout_exits_2_with_unknown(tmp_path: Path) -> None:
    (tmp_path / "ok.log").write_text(JEPSEN_OK)
    done = run_cli("ok.log", "--format", "jepsen", "--timeout", "0", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout.startswith("unknown\n")


USAGE = "python -m mydns_lab.linearizability: "  # a usage error names the program


@pytest.mark.parametrize("args, message", [
    (["missing.log", "--format", "jepsen"], "error: cannot read history missing.log"),
    (["garbage.txt", "--format", "porcupine-kv"], "error: garbage.txt line 1: not a flat"),
    (["garbage.txt", "--format", "jepsen"], "error: garbage.txt: no 'INFO jepsen.util"),
    (["garbage.txt", "--format", "csv"], USAGE + "error: argument --format: invalid choice"),
    (["garbage.txt"], USAGE + "error: the following arguments are required: --format"),
    (["garbage.txt", "--format", "jepsen", "--timeout", "-1"], USAGE + "error: --timeout must be"),
])
def test_cli_bad_input_exits_2_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "garbage.txt").write_text("not a history\n")
    done = run_cli(*args, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith(message)
    assert done.stderr.count("\n") == 1


# --- Third-party fixtures (porcupine) -----------------------------------------------

KV_HISTORIES = {f"c{n}-{kind}.txt": LINEARIZABLE if kind == "ok" else NOT_LINEARIZABLE
                for n in ("01", "10", "50") for kind in ("ok", "bad")}
ONE_OBJECT_STEP_BUDGET = 300  # clock looks, i.e. about 300 * 1024 search steps


def etcd_cases() -> list[Any]:
    verdicts = FIXTURES / "jepsen-etcd" / "VERDICTS.txt"
    if not verdicts.exists():
        return [pytest.param(None, None, marks=pytest.mark.skip(reason=NO_FIXTURES))]
    pairs = [line.split() for line in verdicts.read_text().splitlines() if line.strip()]
    return [pytest.param(name, verdict.replace("-", " "), id=name) for name, verdict in pairs]


def fixture_text(*parts: str) -> str:
    path = FIXTURES.joinpath(*parts)
    if not FIXTURES.is_dir():
        pytest.skip(NO_FIXTURES)
    return path.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(KV_HISTORIES))
def test_fixture_kv_per_key(name: str) -> None:
    ops = parse_porcupine_kv(fixture_text("kv", name), name)
    assert check(ops, KvModel()).verdict == KV_HISTORIES[name]


@pytest.mark.parametrize("name", sorted(KV_HISTORIES))
def test_fixture_kv_as_one_object(name: str) -> None:
    ops = parse_porcupine_kv(fixture_text("kv", name), name)
    assert check(ops, KvModel(partition=False)).verdict == KV_HISTORIES[name]


def test_fixture_c50_as_one_object_needs_footprints() -> None:
    """The plain search over the whole map cannot finish c50-bad: it runs
    through the product of ten keys' configurations. Reasoning by footprint
    decides it well inside the same step budget."""
    ops = parse_porcupine_kv(fixture_text("kv", "c50-bad.txt"), "c50-bad.txt")
    for model, verdict in ((WholeStateKv(), UNKNOWN_VERDICT), (KvModel(partition=False), NOT_LINEARIZABLE)):
        ticks = itertools.count()  # a step budget, so the outcome does not depend on the machine
        result = check(ops, model, timeout_s=ONE_OBJECT_STEP_BUDGET, clock=lambda: next(ticks))
        assert result.verdict == verdict, type(model).__name__


@pytest.mark.parametrize("name, verdict", etcd_cases())
def test_fixture_jepsen_etcd(name: str, verdict: str) -> None:
    ops = parse_jepsen_register(fixture_text("jepsen-etcd", name), name)
    assert check(ops, REGISTER_MODEL).verdict == verdict


def test_fixture_jepsen_etcd_covers_every_log() -> None:
    fixture_text("jepsen-etcd", "VERDICTS.txt")
    logs = {p.name for p in (FIXTURES / "jepsen-etcd").glob("*.log")}
    with_verdict = {line.split()[0] for line in fixture_text("jepsen-etcd", "VERDICTS.txt").splitlines()}
    assert logs - with_verdict == {"etcd_095.log"}
    with pytest.raises(HistoryFormatError, match="no 'INFO jepsen.util"):
        parse_jepsen_register(fixture_text("jepsen-etcd", "etcd_095.log"))
