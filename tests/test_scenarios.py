"""Every data-driven Raft scenario (``tests/scenarios/*.txt``), run and
compared step by step with the output its file expects; and checks that the
runner itself fails loudly on a wrong expectation or a malformed script.

After a deliberate change of behaviour, regenerate the expectations and
review the diff::

    .venv/bin/python -m pytest tests/test_scenarios.py --rewrite
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.scenario import ScenarioError, mismatches, parse, rewritten, run_script

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = sorted((ROOT / "tests" / "scenarios").glob("*.txt"))


def shown(path: Path) -> str:
    """The path as a reader types it from the repository root."""
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario(path: Path, request: pytest.FixtureRequest) -> None:
    """The script's actual output equals the expected output of every
    step; with ``--rewrite`` the file takes the actual output instead."""
    text = path.read_text()
    try:
        steps, outputs = run_script(text, shown(path))
    except ScenarioError as exc:
        pytest.fail(str(exc), pytrace=False)
    if request.config.getoption("rewrite"):
        path.write_text(rewritten(text, steps, outputs))
        return
    report = mismatches(steps, outputs, shown(path))
    if report:
        pytest.fail(report, pytrace=False)


def test_there_are_scenarios_and_each_says_what_it_shows() -> None:
    assert len(SCENARIOS) >= 10
    for path in SCENARIOS:
        assert path.read_text().startswith("# "), f"{shown(path)} must start with # comments"


# --- the runner fails usefully ---------------------------------------------------------

SMALL = """\
# A leader is elected.
start nodes=3 pre_vote=false check_quorum=false
----
ok

campaign 1
----
s1 election timeout after 12 ticks
s1 became candidate term=1
1->2 RequestVote term=1 last=0/0
1->3 RequestVote term=1 last=0/0

deliver type=RequestVote
----
2->1 RequestVoteResponse term=1 granted
3->1 RequestVoteResponse term=1 granted
"""


def test_small_script_passes_as_written() -> None:
    steps, outputs = run_script(SMALL, "small.txt")
    assert mismatches(steps, outputs, "small.txt") == ""


def test_one_corrupted_expected_line_fails_with_file_line_and_diff() -> None:
    corrupted = SMALL.replace("3->1 RequestVoteResponse term=1 granted",
                              "3->1 RequestVoteResponse term=1 rejected")
    steps, outputs = run_script(corrupted, "small.txt")
    report = mismatches(steps, outputs, "small.txt")
    assert "small.txt: 1 of 3 steps differ" in report
    assert "small.txt:13: deliver type=RequestVote" in report  # the command's line
    assert "first difference at small.txt:16" in report          # the corrupted line
    assert "--- expected (small.txt:15)" in report              # where its output starts
    assert "-3->1 RequestVoteResponse term=1 rejected" in report
    assert "+3->1 RequestVoteResponse term=1 granted" in report


def test_rewrite_restores_the_actual_output_and_keeps_comments() -> None:
    corrupted = SMALL.replace("s1 became candidate term=1", "s1 became leader term=9")
    steps, outputs = run_script(corrupted, "small.txt")
    assert rewritten(corrupted, steps, outputs) == SMALL


def test_rewrite_fills_in_an_empty_expectation() -> None:
    bare = "# comment\nstart nodes=1\n----\n\nstatus\n----\n"
    steps, outputs = run_script(bare, "bare.txt")
    assert rewritten(bare, steps, outputs) == (
        "# comment\nstart nodes=1\n----\nok\n\nstatus\n----\n"
        "s1 follower      term=0 vote=0 leader=0 commit=0 applied=0 log=[]\n")


@pytest.mark.parametrize("script, line, message", [
    ("start nodes=3\n----\nok\n\nelect 1\n----\n", 5, "unknown command 'elect'"),
    ("start nodes=3\n----\nok\n\ntick 1\nok\n", 5, "expected a '----' line"),
    ("start nodes=3\n----\nok\n\ntick 1 times=abc\n----\n", 5, "times='abc'"),
    ("start nodes=3\n----\nok\n\ntick 7\n----\n", 5, "'7' is not a node id"),
    ("start nodes=3 bogus=1\n----\n", 1, "unknown option 'bogus'"),
    ("start nodes=3 pre_vote=yes\n----\n", 1, "pre_vote='yes': expected true or false"),
    ("tick 1\n----\n", 1, "the first command must be 'start'"),
    ("start nodes=3\n----\n\ndeliver type=Vote\n----\n", 4, "type='Vote'"),
    ("start nodes=3\n----\n\ncrash 2\n----\n\npropose 2 x\n----\n", 7, "s2 is down"),
    ("start nodes=3\n----\n\npartition 1 2\n----\n", 4, "exactly one group"),
])
def test_malformed_script_fails_with_file_and_line(script: str, line: int, message: str) -> None:
    with pytest.raises(ScenarioError) as raised:
        run_script(script, "bad.txt")
    assert str(raised.value).startswith(f"bad.txt:{line}: ")
    assert message in str(raised.value)


def test_every_scenario_parses() -> None:
    """Parsing alone finds unknown commands and missing separators in every
    file, before anything runs."""
    for path in SCENARIOS:
        assert parse(path.read_text(), shown(path))
