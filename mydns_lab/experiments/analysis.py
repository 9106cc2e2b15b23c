"""How the service behaves over a grid of cluster sizes: servers x clerks.

    python -m mydns_lab.analysis --servers 3,5,7 --clerks 1,3,5 --duration 10 \\
        [--clients 10] [--crash] [--unreliable] [--seed 1] [--out DIR]

For each cell it starts the real lab (:class:`~mydns_lab.experiments.labprocess.LabProcess`,
a fresh temporary data folder), runs the flood workload against every front
end for ``--duration`` seconds, stops the lab and reads its final
statistics. It writes ``DIR/analysis.csv`` (one row per cell) and
``DIR/analysis.png`` (packets and Raft RPCs, operations per second, loss
and latency over the grid). matplotlib is an optional extra; without it
only the chart is left out.

Every process a cell starts is stopped before the next cell begins, also on
Ctrl-C and on errors. A cell that fails is recorded with its error, its
launcher log is kept in DIR, and the run exits 1; a cell whose history is
not linearizable also makes it exit 1. Cell seeds depend only on
``--seed`` and the cell, so ``--servers S --clerks C --seed N`` replays one.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Sequence

from ..cmdline import UsageParser, add_boolean_flag, positive_int
from ..linearizability.search import LINEARIZABLE
from .labprocess import LabProcess, fault_flags
from .workloads import flood

CSV_NAME = "analysis.csv"
CHART_NAME = "analysis.png"
INSTALL_HINT = ".venv/bin/pip install -e '.[analysis]'"
LAUNCHER_STOP_S = 8.0
"""How long an interrupted launcher gets to stop its children by itself
(it allows them 3 s)."""


@dataclass(frozen=True, slots=True)
class CellResult:
    """One cell of the grid; the CSV columns are these fields, in order."""

    servers: int
    clerks: int
    crash: bool
    unreliable: bool
    clients: int
    duration_s: float
    seed: int
    operations: int = 0
    ops_per_s: float = 0.0
    client_loss_rate: float = 0.0
    server_loss_rate: float = 0.0
    network_loss_rate: float = 0.0
    latency_ms_p50: float = 0.0
    latency_ms_p99: float = 0.0
    total_packets: int = 0
    rpcs: int = 0
    linearizability: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and self.linearizability == LINEARIZABLE


@dataclass(frozen=True, slots=True)
class Options:
    servers: tuple[int, ...]
    clerks: tuple[int, ...]
    duration_s: float
    clients: int
    crash: bool
    unreliable: bool
    seed: int
    out: Path


# --- arguments -----------------------------------------------------------------------

def _grid(text: str) -> tuple[int, ...]:
    """A comma-separated list of distinct positive integers, e.g. ``3,5,7``."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated whole numbers such as 3,5,7, got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"every size must be at least 1, got {text!r}")
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"a size appears twice in {text!r}")
    return values


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = UsageParser(prog="python -m mydns_lab.analysis",
                description=__doc__.split("\n\n")[0])
    p.add_argument("--servers", type=_grid, default=(3, 5, 7), metavar="N,N,...",
                   help="Raft cluster sizes (3,5,7)")
    p.add_argument("--clerks", type=_grid, default=(1, 3, 5), metavar="N,N,...",
                   help="clerk / front-end counts (1,3,5)")
    p.add_argument("--duration", type=_positive_seconds, default=10.0, metavar="SECONDS",
                   help="flood time per cell (10)")
    p.add_argument("--clients", type=positive_int, default=10, metavar="N",
                   help="flood clients per cell, spread over the front ends (10)")
    add_boolean_flag(p, "--crash", help="kill servers at random moments and restart them")
    add_boolean_flag(p, "--unreliable", help="drop, delay and reorder messages")
    p.add_argument("--seed", type=int, default=1, help="base seed of every cell (1)")
    p.add_argument("--out", type=Path, default=Path("analysis-out"), metavar="DIR",
                   help="where analysis.csv and analysis.png go (./analysis-out)")
    return p


def parse_options(argv: Sequence[str] | None) -> Options:
    args = build_parser().parse_args(argv)
    return Options(servers=args.servers, clerks=args.clerks, duration_s=args.duration,
                   clients=args.clients, crash=args.crash, unreliable=args.unreliable,
                   seed=args.seed, out=args.out)


def cell_seed(base: int, servers: int, clerks: int) -> int:
    """The same cell gets the same seed whatever else is in the grid."""
    return base * 10_000 + servers * 100 + clerks


# --- running a cell ------------------------------------------------------------------

def run_cell(options: Options, servers: int, clerks: int, workdir: Path) -> CellResult:
    """Start the lab, flood it, stop it; the lab is stopped on every path
    (LabProcess's own context manager does not cover a failed start)."""
    base = _unmeasured_cell(options, servers, clerks)
    lab = LabProcess(workdir / "data", *fault_flags(options.crash, options.unreliable),
                     nservers=servers, nclerks=clerks, seed=base.seed)
    interrupted = False
    try:
        lab.start()
        report = asyncio.run(flood(lab.servers(), clients=options.clients,
                                   duration_s=options.duration_s, seed=base.seed))
        stats = lab.stop()
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        _stop_for_sure(lab, interrupted)
    summary = report.summary()
    verdict = report.linearizability.partition(" (")[0]
    return replace(
        base, operations=summary["operations"], ops_per_s=summary["ops_per_s"],
        client_loss_rate=summary["client_loss_rate"],
        server_loss_rate=summary["server_loss_rate"],
        network_loss_rate=stats["network_loss_rate"],
        latency_ms_p50=summary["latency_ms_p50"], latency_ms_p99=summary["latency_ms_p99"],
        total_packets=stats["total_packets"], rpcs=stats["rpcs"], linearizability=verdict,
        error="; ".join(p.splitlines()[0] for p in report.problems if p)[:300])


def _unmeasured_cell(options: Options, servers: int, clerks: int) -> CellResult:
    """A cell's settings, with every figure still zero."""
    return CellResult(servers, clerks, options.crash, options.unreliable, options.clients,
                      options.duration_s, cell_seed(options.seed, servers, clerks))


def _stop_for_sure(lab: LabProcess, interrupted: bool = False) -> None:
    """Nothing the lab started outlives this call.

    A Ctrl-C in the terminal reaches the launcher too, and it then stops its
    children itself: ``interrupted`` first gives it the time to, since a
    SIGTERM in the middle of that would cut it short. Whatever is still
    running after that is stopped, then killed."""
    if lab.proc is None:
        return
    if lab.proc.poll() is None:
        # Servers restarted since start() are not in started_pids yet.
        lab.started_pids |= lab.descendants()
        if interrupted:
            try:
                lab.proc.wait(timeout=LAUNCHER_STOP_S)
            except subprocess.TimeoutExpired:
                pass
    if lab.proc.poll() is None:
        try:
            lab.stop()
            return
        except BaseException:
            pass
    try:
        lab.assert_gone(lab.started_pids)
    except AssertionError:
        lab.kill_everything()


def run_grid(options: Options) -> list[CellResult]:
    """Every cell in order, servers-major; prints one line per cell."""
    cells = [(s, c) for s in options.servers for c in options.clerks]
    print(f"analysis: {len(cells)} cells, about {options.duration_s:g} s of flood each "
          f"plus start and stop; crash={options.crash} unreliable={options.unreliable}",
          flush=True)
    results = []
    for index, (servers, clerks) in enumerate(cells, 1):
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"mydns-analysis-s{servers}-c{clerks}-") as tmp:
            try:
                result = run_cell(options, servers, clerks, Path(tmp))
            except Exception as exc:  # a broken cell is reported; the others still run
                result = _failed_cell(options, servers, clerks, exc, Path(tmp))
        results.append(result)
        print(f"cell {index}/{len(cells)} {progress_line(result)} "
              f"({time.monotonic() - started:.1f} s)", flush=True)
    return results


def _failed_cell(options: Options, servers: int, clerks: int, exc: Exception,
                 workdir: Path) -> CellResult:
    log = workdir / "data-launcher.log"
    kept = options.out / f"cell-s{servers}-c{clerks}-launcher.log"
    if log.exists():
        options.out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log, kept)
    message = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    replay = (f"replay: python -m mydns_lab.analysis --servers {servers} --clerks {clerks} "
              f"--duration {options.duration_s:g} --clients {options.clients} "
              f"{' '.join(fault_flags(options.crash, options.unreliable))} "
              f"--seed {options.seed}")
    where = f"; launcher log {kept}" if log.exists() else ""
    return replace(_unmeasured_cell(options, servers, clerks),
                   error=f"{message[:200]}{where}; {replay}")


# --- output --------------------------------------------------------------------------

def progress_line(r: CellResult) -> str:
    head = f"servers={r.servers} clerks={r.clerks} seed={r.seed}"
    if r.error and not r.linearizability:
        return f"{head} FAILED {r.error}"
    line = (f"{head} ops/s={r.ops_per_s:g} client_loss={r.client_loss_rate:.2%} "
            f"network_loss={r.network_loss_rate:.2%} p50={r.latency_ms_p50:g}ms "
            f"p99={r.latency_ms_p99:g}ms packets={r.total_packets} rpcs={r.rpcs} "
            f"{r.linearizability}")
    return f"{line} problems: {r.error}" if r.error else line


def write_csv(rows: Sequence[CellResult], path: Path) -> None:
    names = [f.name for f in fields(CellResult)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=names)
        writer.writeheader()
        for row in rows:
            writer.writerow(asdict(row))


def read_csv(path: Path) -> list[CellResult]:
    """The rows :func:`write_csv` wrote, typed again."""
    kinds = {f.name: f.type for f in fields(CellResult)}
    convert = {"int": int, "float": float, "bool": lambda s: s == "True", "str": str}
    with open(path, newline="") as source:
        return [CellResult(**{k: convert[kinds[k]](v) for k, v in row.items()})
                for row in csv.DictReader(source)]


TABLE_COLUMNS = (("servers", "servers", "{}"), ("clerks", "clerks", "{}"),
                 ("ops/s", "ops_per_s", "{:g}"), ("client loss", "client_loss_rate", "{:.2%}"),
                 ("net loss", "network_loss_rate", "{:.2%}"),
                 ("p50 ms", "latency_ms_p50", "{:g}"), ("p99 ms", "latency_ms_p99", "{:g}"),
                 ("packets", "total_packets", "{}"), ("rpcs", "rpcs", "{}"),
                 ("history", "linearizability", "{}"))


def format_table(rows: Sequence[CellResult]) -> str:
    """A plain fixed-width table, one line per cell (failed cells say so)."""
    lines = [[title for title, _, _ in TABLE_COLUMNS]]
    for r in rows:
        cells = [fmt.format(getattr(r, attr)) for _, attr, fmt in TABLE_COLUMNS]
        if r.error and not r.linearizability:
            cells = cells[:2] + ["failed"] + [""] * (len(cells) - 3)
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(TABLE_COLUMNS))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(line, widths)).rstrip()
                     for line in lines)


SERVER_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple",
                  "tab:brown")
PANELS = (  # title, y label, (column, line style, what) per line of each server count
    ("messages on the network (whole run)", "count",
     (("total_packets", "-", "all packets"), ("rpcs", "--", "Raft RPCs"))),
    ("operations per second (flood)", "ops/s", (("ops_per_s", "-", "ops/s"),)),
    ("loss", "lost", (("client_loss_rate", "-", "client requests"),
                      ("network_loss_rate", ":", "network packets"))),
    ("latency seen by the clients", "ms",
     (("latency_ms_p99", "-", "p99"), ("latency_ms_p50", ":", "p50"))),
)


def write_chart(rows: Sequence[CellResult], path: Path, title: str) -> bool:
    """Draw the 2x2 chart; False (and nothing written) without matplotlib.

    Colour = server count, x axis = clerks, line style = which figure;
    cells that failed to run are left out."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D
        from matplotlib.ticker import PercentFormatter
    except ImportError:
        return False
    measured = [r for r in rows if r.linearizability]
    server_counts = sorted({r.servers for r in measured})
    colour = {n: SERVER_COLOURS[i % len(SERVER_COLOURS)] for i, n in enumerate(server_counts)}
    figure = Figure(figsize=(11, 8.5), layout="constrained")
    FigureCanvasAgg(figure)
    for axes, (heading, unit, series) in zip(figure.subplots(2, 2).flat, PANELS):
        for servers in server_counts:
            line = sorted((r for r in measured if r.servers == servers), key=lambda r: r.clerks)
            for column, style, _ in series:
                axes.plot([r.clerks for r in line], [getattr(r, column) for r in line],
                          linestyle=style, marker="o", color=colour[servers])
        axes.set_title(heading)
        axes.set(xlabel="clerks (front ends)", ylabel=unit)
        axes.set_xticks(sorted({r.clerks for r in rows}))
        axes.set_ylim(bottom=0)
        axes.grid(True, alpha=0.3)
        if unit == "lost":
            axes.yaxis.set_major_formatter(PercentFormatter(xmax=1))
        if len(series) > 1:
            axes.legend([Line2D([], [], color="grey", linestyle=style) for _, style, _ in series],
                        [what for _, _, what in series], fontsize="small", loc="best")
    figure.legend([Line2D([], [], color=colour[n], marker="o") for n in server_counts],
                  [f"{n} servers" for n in server_counts], loc="outside lower center",
                  ncols=max(1, len(server_counts)))
    figure.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return True


def chart_title(options: Options) -> str:
    faults = [name for name, on in (("crash", options.crash),
                                    ("unreliable", options.unreliable)) if on]
    return (f"MyDNS lab: flood {options.duration_s:g} s, {options.clients} clients, "
            f"{' + '.join(faults) or 'reliable network, no crashes'}")


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(argv)
    try:
        rows = run_grid(options)
    except KeyboardInterrupt:
        print("analysis: interrupted; every lab process was stopped, nothing written",
              file=sys.stderr)
        return 130
    csv_path, chart_path = options.out / CSV_NAME, options.out / CHART_NAME
    write_csv(rows, csv_path)
    print(format_table(rows))
    print(f"rows written to {csv_path}")
    if write_chart(rows, chart_path, chart_title(options)):
        print(f"chart written to {chart_path}")
    else:
        print(f"no chart: matplotlib is not installed; get it with {INSTALL_HINT}")
    bad = [r for r in rows if not r.ok]
    for r in bad:
        print(f"analysis: cell servers={r.servers} clerks={r.clerks} "
              f"{r.linearizability or 'failed'}: {r.error}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
