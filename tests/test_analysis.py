"""The grid analysis without labs: arguments, the CSV, the table and the chart
from hand-made rows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mydns_lab.experiments import analysis
from mydns_lab.experiments.analysis import CellResult, Options, parse_options
from mydns_lab.experiments.labprocess import REPO


def _row(servers: int, clerks: int, **overrides: object) -> CellResult:
    figures: dict = dict(servers=servers, clerks=clerks, crash=False, unreliable=False,
                         clients=10, duration_s=10.0, seed=analysis.cell_seed(1, servers, clerks),
                         operations=1000 * clerks, ops_per_s=100.0 * clerks + servers,
                         client_loss_rate=0.0, server_loss_rate=0.0, network_loss_rate=0.0,
                         latency_ms_p50=1.5 * servers, latency_ms_p99=10.25 * servers,
                         total_packets=1000 * servers * clerks, rpcs=300 * servers,
                         linearizability="linearizable", error="")
    figures.update(overrides)
    return CellResult(**figures)


ROWS = [_row(s, c) for s in (3, 5) for c in (1, 3)] + [
    _row(7, 1, linearizability="not linearizable", error="history not linearizable"),
    CellResult(7, 3, False, False, 10, 10.0, 70703, error="AssertionError: timed out"),
]


# --- arguments -----------------------------------------------------------------------

def test_defaults() -> None:
    options = parse_options([])
    assert (options.servers, options.clerks, options.duration_s) == ((3, 5, 7), (1, 3, 5), 10.0)
    assert (options.crash, options.unreliable, options.clients) == (False, False, 10)


def test_grid_and_flags() -> None:
    options = parse_options(["--servers", "3,5", "--clerks=2", "--duration", "2.5",
                             "--crash", "--unreliable=false", "--clients", "4",
                             "--seed", "9", "--out", "somewhere"])
    assert options == Options(servers=(3, 5), clerks=(2,), duration_s=2.5, clients=4,
                              crash=True, unreliable=False, seed=9, out=Path("somewhere"))


@pytest.mark.parametrize("argv, message", [
    (["--servers", "3,x"], "comma-separated whole numbers"),
    (["--servers", ""], "comma-separated whole numbers"),
    (["--servers", "3,,5"], "comma-separated whole numbers"),
    (["--clerks", "0,1"], "at least 1"),
    (["--clerks", "-3"], "at least 1"),
    (["--servers", "3,3"], "appears twice"),
    (["--duration", "0"], "more than 0 seconds"),
    (["--duration", "soon"], "expected seconds"),
    (["--clients", "0"], "at least 1"),
    (["--crash", "maybe"], "expected true or false"),
    (["--bogus"], "unrecognized arguments"),
])
def test_bad_arguments_exit_2_with_one_line(argv: list[str], message: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_options(argv)
    assert exited.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines


def test_bad_arguments_from_the_command_line() -> None:
    proc = subprocess.run([sys.executable, "-m", "mydns_lab.analysis", "--servers", "0"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "python -m mydns_lab.analysis: error: argument --servers: every size must be at "
        "least 1, got '0' (see --help)"]


def test_cell_seed_depends_only_on_the_cell() -> None:
    seeds = {analysis.cell_seed(1, s, c) for s in (3, 5, 7) for c in (1, 3, 5)}
    assert len(seeds) == 9
    assert analysis.cell_seed(1, 5, 3) == analysis.cell_seed(1, 5, 3) != \
        analysis.cell_seed(2, 5, 3)


# --- output --------------------------------------------------------------------------

def test_csv_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "out" / "analysis.csv"
    analysis.write_csv(ROWS, path)
    lines = path.read_text().splitlines()
    assert lines[0].split(",")[:7] == ["servers", "clerks", "crash", "unreliable", "clients",
                                      "duration_s", "seed"]
    for column in ("ops_per_s", "client_loss_rate", "server_loss_rate", "network_loss_rate",
                   "latency_ms_p50", "latency_ms_p99", "total_packets", "rpcs",
                   "linearizability", "error"):
        assert column in lines[0].split(","), column
    assert len(lines) == 1 + len(ROWS)
    assert lines[1].startswith("3,1,False,False,10,10.0,10301,1000,103.0,")
    assert analysis.read_csv(path) == ROWS


def test_ok_and_table() -> None:
    assert [r.ok for r in ROWS] == [True] * 4 + [False, False]
    table = analysis.format_table(ROWS).splitlines()
    assert table[0].split() == ["servers", "clerks", "ops/s", "client", "loss", "net", "loss",
                                "p50", "ms", "p99", "ms", "packets", "rpcs", "history"]
    assert table[1].split() == ["3", "1", "103", "0.00%", "0.00%", "4.5", "30.75", "3000",
                                "900", "linearizable"]
    assert table[-2].split()[-2:] == ["not", "linearizable"]
    assert table[-1].split() == ["7", "3", "failed"]
    assert len({len(line) for line in table[:5]}) == 1  # aligned


def test_progress_lines() -> None:
    assert analysis.progress_line(ROWS[0]) == (
        "servers=3 clerks=1 seed=10301 ops/s=103 client_loss=0.00% network_loss=0.00% "
        "p50=4.5ms p99=30.75ms packets=3000 rpcs=900 linearizable")
    assert analysis.progress_line(ROWS[-1]).endswith("FAILED AssertionError: timed out")


def test_chart(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "charts" / "analysis.png"
    options = parse_options(["--duration", "10"])
    assert analysis.write_chart(ROWS, path, analysis.chart_title(options))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000


def test_without_matplotlib_the_chart_is_left_out(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import now raises ImportError
    path = tmp_path / "analysis.png"
    assert analysis.write_chart(ROWS, path, "title") is False
    assert not path.exists()


def test_main_writes_the_csv_and_says_how_to_get_the_chart(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(analysis, "run_grid", lambda options: ROWS[:4])
    monkeypatch.setattr(analysis, "write_chart", lambda rows, path, title: False)
    assert analysis.main(["--servers", "3,5", "--clerks", "1,3", "--out", str(tmp_path)]) == 0
    assert analysis.read_csv(tmp_path / analysis.CSV_NAME) == ROWS[:4]
    out = capsys.readouterr().out
    assert "no chart: matplotlib is not installed; get it with " \
           ".venv/bin/pip install -e '.[analysis]'" in out


def test_main_fails_when_a_cell_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(analysis, "run_grid", lambda options: ROWS)
    monkeypatch.setattr(analysis, "write_chart", lambda rows, path, title: True)
    assert analysis.main(["--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "cell servers=7 clerks=1 not linearizable" in err
    assert "cell servers=7 clerks=3 failed: AssertionError" in err
