"""The crash x unreliable x size matrix on real processes (issue 6).

Each cell starts the lab with its faults, runs the correctness workload and
a short flood against it, then restarts the cluster without faults on the
same data and checks that every acknowledged put is still there. Run it
alone with ``sh run_tests.sh -m matrix``; set MYDNS_MATRIX_REPORT=FILE to
collect each cell's figures as JSON lines.

Asserted per cell: correctness holds, both histories are linearizable,
every acknowledged put is readable after the faults stop, losses appear
only where the network is unreliable or servers crash, the statistics are
consistent (client-side sent >= server-side received), and no process is
left behind (LabProcess checks it on stop).
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from mydns_lab.clients.jsonclient import NoAnswer
from mydns_lab.experiments.labprocess import LabProcess, fault_flags, free_port_range, wait_for
from mydns_lab.experiments.workloads import Report, correctness, flood

pytestmark = [pytest.mark.matrix, pytest.mark.lab]

CORRECTNESS_S = 6.0
FLOOD_S = 12.0


def _final_values(report_ops: list) -> dict[str, set[str]]:
    """For each name, the values it may hold once everything settled: the
    last acknowledged put's, or that of any later put whose outcome is
    unknown (a put with a newer sequence number may still have landed; an
    older one can never overwrite a newer, the store refuses it)."""
    by_key: dict[str, list] = {}
    for op in report_ops:
        if op.input[0] == "put":
            by_key.setdefault(op.input[1], []).append(op)
    allowed: dict[str, set[str]] = {}
    for key, puts in by_key.items():
        puts.sort(key=lambda op: op.call)
        acked = [i for i, op in enumerate(puts) if op.ret is not None]
        if not acked:
            continue
        last = acked[-1]
        allowed[key] = {puts[last].input[2]} | {op.input[2] for op in puts[last + 1:]}
    return allowed


def _run_cell(lab: LabProcess, seed: int) -> tuple[Report, Report, list]:
    servers = lab.servers()
    ops: list = []

    async def both() -> tuple[Report, Report]:
        first = await correctness(servers, clients=5, names=20, duration_s=CORRECTNESS_S,
                                  seed=seed, history_sink=ops)
        second = await flood(servers, clients=8, duration_s=FLOOD_S, seed=seed,
                             history_sink=ops)
        return first, second

    first, second = asyncio.run(both())
    return first, second, ops


def _read(lab: LabProcess, name: str) -> str:
    def answered() -> bool:
        try:
            reply = lab.call(0, {"Type": "Query", "Key": name}, 2.0, 1)
        except NoAnswer:
            return False
        seen.append(reply)
        return reply.get("Type") == "Response"
    seen: list[dict] = []
    wait_for(answered, 20, f"a query of {name} to be answered")
    value = seen[-1]["Value"]
    return value if isinstance(value, str) else ",".join(value)


@pytest.mark.parametrize("nservers", [3, 5])
@pytest.mark.parametrize("unreliable", [False, True])
@pytest.mark.parametrize("crash", [False, True])
def test_matrix_cell(tmp_path: Path, crash: bool, unreliable: bool, nservers: int) -> None:
    seed = 100 + 10 * nservers + 2 * crash + unreliable
    data = tmp_path / "data"
    lab = LabProcess(data, *fault_flags(crash, unreliable), nservers=nservers, nclerks=3, seed=seed)
    where = f"cell crash={crash} unreliable={unreliable} nservers={nservers} ({lab.replay})"
    with lab:
        first, second, ops = _run_cell(lab, seed)
        stats = lab.stop()
    for report in (first, second):
        assert report.ok, f"{where}: {report.verdict_line()}\n" + "\n".join(report.problems)
        assert report.linearizability.startswith("linearizable"), where
        summary = report.summary()
        assert summary["client_sent"] >= summary["server_received"], (where, summary)
    if not crash and not unreliable:
        assert stats["packets"]["dropped"] == 0, (where, stats["packets"])
        assert first.client_lost == 0 and second.client_lost == 0, where
    if unreliable:
        assert stats["packets"]["dropped"] > 0, (where, stats["packets"])
    if crash:
        assert stats["crashes_injected"] > 0, (where, stats)
    # Faults off, same data: every acknowledged put must be there.
    allowed = _final_values(ops)
    with LabProcess(data, nservers=nservers, nclerks=1, seed=seed + 1,
                    port=free_port_range(1, 40000)) as calm:
        for name, values in allowed.items():
            value = _read(calm, name)
            assert value in values, f"{where}: {name} reads {value!r} after the faults, " \
                                    f"expected one of {sorted(values)}"
    _record(where, crash, unreliable, nservers, first, second, stats)


def _record(where: str, crash: bool, unreliable: bool, nservers: int, first: Report,
            second: Report, stats: dict) -> None:
    line = {"crash": crash, "unreliable": unreliable, "nservers": nservers,
            "correctness": first.summary(), "flood": second.summary(),
            "network_loss_rate": stats["network_loss_rate"],
            "crashes_injected": stats["crashes_injected"]}
    print(f"\n{where}\n  {first.verdict_line()}\n  {second.verdict_line()}\n"
          f"  network loss {stats['network_loss_rate']:.2%}, "
          f"crashes {stats['crashes_injected']}")
    path = os.environ.get("MYDNS_MATRIX_REPORT")
    if path:
        with open(path, "a") as out:
            out.write(json.dumps(line) + "\n")
