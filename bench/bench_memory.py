"""Resident memory of every lab process, idle and holding many names.

Starts the real lab (5 servers, 5 front ends, fsync on) on loopback with a
fresh data folder and measures every process it started (the launcher,
the router, each server, each front end, and any helper such as
multiprocessing's resource tracker): RSS (``memory_info().rss``), and PSS
and USS from ``/proc/PID/smaps`` (``memory_full_info()``). RSS counts pages
shared between processes once in each, so the RSS total overstates what
the lab takes; the PSS total splits them and is the honest sum.

It measures once idle, right after every front end serves (after the
memory has stopped growing), then claims ``--names`` names through the
JSON protocol (``host0`` .. ``host{N-1}``, the last one alone after every
other claim was acknowledged), waits until every front end answers that
last name over DNS (its copy is fed in log order, so it then holds the
others; a random sample of ``--sample`` names is checked too), waits until
the memory stops growing again, and measures again. Per process it prints
idle RSS, loaded RSS and (loaded - idle) / names, in bytes per name.

    .venv/bin/python bench/bench_memory.py [--names 100000] [--sample 200]

Targets (issue: "a benchmark loads 100,000 names and reports resident
memory per server and per front end"): at most 1 KB (1,024 B) per name per
process, and the idle lab (5 servers, 5 front ends, router) at most 300 MB
in all. A measurement, not a test: it exits 0 whatever the figures, and
1 only when the lab failed (did not start, or a front end never served the
names).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import random
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_dns import dns_addresses  # noqa: E402  (sibling scripts, not a package)
from bench_restart import claim_names, host_address  # noqa: E402

from mydns_lab.clients.jsonclient import NoAnswer  # noqa: E402
from mydns_lab.experiments.labprocess import LabProcess  # noqa: E402

MB = 1024 * 1024
PER_NAME_TARGET_B = 1024
IDLE_TOTAL_TARGET_MB = 300
DEFAULT_MAX_NAMES = 100_000  # the lab's --max-names default
SENTINEL_TOKEN = "bench-memory"


@dataclass(frozen=True, slots=True)
class Usage:
    """One process's memory at one moment, in bytes (pss/uss None when
    /proc/PID/smaps could not be read)."""

    pid: int
    rss: int
    pss: int | None
    uss: int | None


def role_of(process: psutil.Process) -> str:
    """A short label: the title after ``mydns `` (``lab``, ``router``,
    ``server s1``, ``frontend c0``), else what the command line runs."""
    words = [w for w in process.cmdline() if w]
    title = " ".join(words)
    if title.startswith("mydns "):
        return title[len("mydns "):]
    if "resource_tracker" in title:
        return "resource tracker"
    return process.name()


def order_key(role: str) -> tuple[int, str]:
    """Launcher, router, servers, front ends, then anything else."""
    for rank, prefix in enumerate(("lab", "router", "server", "frontend")):
        if role.startswith(prefix):
            return rank, f"{role:>20}"  # right-aligned: s2 before s10
    return 4, role


def lab_processes(lab: LabProcess) -> dict[str, psutil.Process]:
    """Every live process of the lab by role: the launcher and its descendants."""
    assert lab.proc is not None
    found = {}
    for pid in sorted(lab.descendants() | {lab.proc.pid}):
        try:
            process = psutil.Process(pid)
            found[role_of(process)] = process
        except psutil.NoSuchProcess:
            continue
    return dict(sorted(found.items(), key=lambda item: order_key(item[0])))


def measure(lab: LabProcess) -> dict[str, Usage]:
    """The memory of every process of the lab now, by role."""
    usage = {}
    for role, process in lab_processes(lab).items():
        try:
            rss = process.memory_info().rss
            try:
                full = process.memory_full_info()
                pss, uss = getattr(full, "pss", None), full.uss
            except psutil.AccessDenied:
                pss = uss = None
        except psutil.NoSuchProcess:
            continue
        usage[role] = Usage(process.pid, rss, pss, uss)
    return usage


def total_rss(lab: LabProcess) -> int:
    """The RSS of every process of the lab now, summed."""
    total = 0
    for process in lab_processes(lab).values():
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def settle(lab: LabProcess, max_s: float, interval_s: float = 1.0, window: int = 4,
           tolerance_b: int = MB) -> tuple[float, bool]:
    """Sample the total RSS every ``interval_s`` until the last ``window``
    samples lie within ``tolerance_b`` of each other, for at most ``max_s``.
    Returns the seconds waited and whether it settled."""
    started = time.monotonic()
    samples: list[int] = []
    while True:
        samples.append(total_rss(lab))
        recent = samples[-window:]
        if len(recent) == window and max(recent) - min(recent) <= tolerance_b:
            return time.monotonic() - started, True
        if time.monotonic() - started + interval_s > max_s:
            return time.monotonic() - started, False
        time.sleep(interval_s)  # the sampling interval


def claim_all(lab: LabProcess, count: int) -> tuple[int, float]:
    """Claim ``host0`` .. ``host{count-1}``: all but the last through
    bench_restart's claimers, then the last alone (the sentinel, later in
    the log than every acknowledged claim). Returns the names acknowledged
    and the seconds taken."""
    started = time.monotonic()
    acknowledged = asyncio.run(claim_names(lab.servers(), count - 1)) if count > 1 else 0
    last = count - 1
    request = {"Type": "Put", "Key": f"host{last}", "Value": host_address(last), "Seq": 1,
               "Token": SENTINEL_TOKEN}
    try:
        reply = lab.call(0, request, timeout_s=3.0, attempts=5)
    except NoAnswer:
        reply = {}
    if reply.get("Type") == "PutOk":
        acknowledged += 1
    else:
        print(f"the last name, host{last}, was not acknowledged: {reply or 'no answer'}")
    return acknowledged, time.monotonic() - started


def wait_loaded(lab: LabProcess, count: int, timeout_s: float) -> dict[tuple[str, int], float]:
    """Poll every front end for the last name over DNS until each answers
    it with its address, for at most ``timeout_s``; the seconds each took
    (front ends that never did are left out)."""
    last = count - 1
    name, expected = f"host{last}", host_address(last)
    started = time.monotonic()
    pending = set(lab.servers())
    took: dict[tuple[str, int], float] = {}
    while pending and time.monotonic() - started < timeout_s:
        if lab.proc is None or lab.proc.poll() is not None:
            break
        for server in sorted(pending):
            if dns_addresses(server, [name], lab.zone).get(name) == [expected]:
                took[server] = time.monotonic() - started
                pending.discard(server)
        time.sleep(0.05)  # the polling interval
    return took


def check_sample(lab: LabProcess, count: int, size: int, seed: int) -> dict[tuple[str, int], int]:
    """Ask every front end for ``size`` random names (and the first and
    last); how many each did not answer with the right address."""
    rng = random.Random(seed)
    indices = sorted({0, count - 1, *rng.sample(range(count), min(size, count))})
    expected = {f"host{i}": [host_address(i)] for i in indices}
    wrong = {}
    for server in lab.servers():
        answers = dns_addresses(server, list(expected), lab.zone)
        wrong[server] = sum(1 for name, addrs in expected.items() if answers.get(name) != addrs)
    return wrong


NAMED_ROLES = ("server", "frontend", "router")
"""The processes the idle target names ("5 servers, 5 front ends, router")."""


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def mb(value: int | None) -> str:
    return "-" if value is None else f"{value / MB:.1f}"


def print_idle(idle: dict[str, Usage]) -> None:
    """The idle table, its totals, and the RSS of the processes the target names."""
    print(f"{'process':<18}{'pid':>8}{'RSS MB':>10}{'PSS MB':>10}{'USS MB':>10}")
    for role, u in idle.items():
        print(f"{role:<18}{u.pid:>8}{mb(u.rss):>10}{mb(u.pss):>10}{mb(u.uss):>10}")
    print_totals("idle", idle)
    named = [u for role, u in idle.items() if role.startswith(NAMED_ROLES)]
    print(f"idle servers + front ends + router alone ({len(named)} processes): RSS "
          f"{sum(u.rss for u in named) / MB:.1f} MB")


def print_totals(what: str, usage: dict[str, Usage]) -> None:
    """RSS, PSS and USS summed over the processes."""
    def summed(field: str) -> str:
        values = [getattr(u, field) for u in usage.values()]
        return "-" if None in values else f"{sum(values) / MB:.1f} MB"
    print(f"{what} total over {len(usage)} processes: RSS {summed('rss')}, "
          f"PSS {summed('pss')}, USS {summed('uss')}")


def print_loaded(idle: dict[str, Usage], loaded: dict[str, Usage], names: int) -> bool:
    """Per process: idle and loaded RSS, bytes per name against 1 KB (and
    the same from USS). Returns whether every process met the target."""
    print(f"{'process':<18}{'idle RSS MB':>12}{'loaded RSS MB':>14}{'B/name RSS':>11}"
          f"{'B/name USS':>11}  target <= {PER_NAME_TARGET_B} B")
    every_ok = True
    for role in sorted(idle.keys() | loaded.keys(), key=order_key):
        before, after = idle.get(role), loaded.get(role)
        if before is None or after is None or before.pid != after.pid:
            print(f"{role:<18}  not measured both times (started or restarted in between)")
            every_ok = False
            continue
        per_name = (after.rss - before.rss) / names
        uss = ("-" if before.uss is None or after.uss is None
               else f"{(after.uss - before.uss) / names:.0f}")
        ok = per_name <= PER_NAME_TARGET_B
        every_ok = every_ok and ok
        print(f"{role:<18}{mb(before.rss):>12}{mb(after.rss):>14}{per_name:>11.0f}{uss:>11}  "
              f"{verdict(ok)}")
    print_totals("loaded", loaded)
    return every_ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--names", type=int, default=100_000, help="names to claim (100,000)")
    parser.add_argument("--nservers", type=int, default=5)
    parser.add_argument("--nclerks", type=int, default=5, help="front ends")
    parser.add_argument("--sample", type=int, default=200,
                        help="random names checked at every front end once loaded")
    parser.add_argument("--load-timeout", type=float, default=300.0, metavar="SECONDS",
                        help="how long front ends may take to answer the last name")
    parser.add_argument("--settle-max", type=float, default=60.0, metavar="SECONDS",
                        help="longest wait for the memory to stop growing, each time")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.names < 1:
        parser.error("--names must be at least 1")
    print("$ " + shlex.join([sys.executable, *sys.argv]))
    print(f"date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    flags = ["--fresh"]
    if args.names > DEFAULT_MAX_NAMES:
        flags += ["--max-names", str(args.names)]
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        lab = LabProcess(Path(tmp) / "data", *flags, nservers=args.nservers,
                         nclerks=args.nclerks, seed=args.seed)
        print(f"lab: {args.nservers} servers, {args.nclerks} front ends, fsync on "
              f"({lab.replay})", flush=True)
        try:
            lab.launch().wait_until_serving()
            return run(lab, args)
        finally:
            shut_down(lab)


def run(lab: LabProcess, args: argparse.Namespace) -> int:
    """Measure idle, load the names, measure loaded; the exit status."""
    waited, settled = settle(lab, args.settle_max)
    print(f"\nidle, every front end serving (memory {'steady' if settled else 'still moving'} "
          f"after {waited:.0f} s):", flush=True)
    idle = measure(lab)
    print_idle(idle)

    acknowledged, took = claim_all(lab, args.names)
    print(f"\nclaimed {acknowledged} of {args.names} names in {took:.1f} s "
          f"({acknowledged / took:.0f}/s)", flush=True)
    loaded_at = wait_loaded(lab, args.names, args.load_timeout)
    for server in lab.servers():
        seconds = loaded_at.get(server)
        print(f"  front end :{server[1]} answered host{args.names - 1} "
              + (f"{seconds:.2f} s after its claim" if seconds is not None
                 else f"not within {args.load_timeout:g} s"))
    if len(loaded_at) < len(lab.servers()):
        print("a front end never served the names: the lab failed")
        return 1
    wrong = check_sample(lab, args.names, args.sample, args.seed)
    print(f"  sample of {args.sample} random names (+ first and last), not answered right: "
          + ", ".join(f":{server[1]} {count}" for server, count in wrong.items()))

    waited, settled = settle(lab, args.settle_max)
    print(f"\nloaded with {acknowledged} names (memory {'steady' if settled else 'still moving'}"
          f" after {waited:.0f} s):", flush=True)
    loaded = measure(lab)
    every_ok = print_loaded(idle, loaded, max(acknowledged, 1))
    print(f"\nper-name target (<= {PER_NAME_TARGET_B} B/name, every process): "
          f"{verdict(every_ok)}")
    named_rss = sum(u.rss for role, u in idle.items() if role.startswith(NAMED_ROLES))
    every_rss = sum(u.rss for u in idle.values())
    print(f"idle lab target (<= {IDLE_TOTAL_TARGET_MB} MB RSS over what the issue names: "
          f"servers, front ends, router): {named_rss / MB:.1f} MB "
          f"{verdict(named_rss <= IDLE_TOTAL_TARGET_MB * MB)}")
    print(f"the same budget over every process, the launcher and multiprocessing's resource "
          f"tracker too: {every_rss / MB:.1f} MB {verdict(every_rss <= IDLE_TOTAL_TARGET_MB * MB)}")
    return 0


def shut_down(lab: LabProcess) -> None:
    """Stop the lab (SIGTERM); SIGKILL every process if that fails."""
    if lab.proc is None:
        return
    try:
        if lab.proc.poll() is None:
            lab.stop()
            return
    except Exception as exc:  # stopping failed: kill, and still report why
        print(f"stopping the lab failed ({exc}); killing it", file=sys.stderr)
    lab.kill_everything()


if __name__ == "__main__":
    sys.exit(main())
