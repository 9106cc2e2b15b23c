"""What machine a benchmark ran on, and how fast it was at that moment.

This machine's speed drifts by more than 2x over a day (on 2026-12-06 a
fixed loop of pure Python took 3.8 s, then 2.2 s half an hour later). A ratio against a
reference measured in the same run survives that only partly: the lab is
CPU-bound Python, etcd, dnsmasq and BIND are compiled, so a slow hour
costs the lab more than its reference. Every benchmark therefore prints
:func:`host_line`, whose gauge says how fast Python ran when it started.
"""

from __future__ import annotations

import os
import platform
import time

GAUGE_STEPS = 1_000_000


def python_gauge_ms() -> float:
    """The best of three runs of a fixed pure-Python loop, in ms: lower is
    a faster machine. Compare it only between runs on one machine."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for i in range(GAUGE_STEPS):
            total += i
        best = min(best, time.perf_counter() - started)
    return best * 1000


def host_line() -> str:
    """Python, the CPU count, the kernel, and the gauge, in one line."""
    return (f"Python {platform.python_version()} on {platform.machine()}, "
            f"{os.cpu_count()} CPUs, {platform.system()} {platform.release()}; "
            f"speed gauge: {python_gauge_ms():.0f} ms for {GAUGE_STEPS:,} steps of a "
            "Python loop (bench/machine.py; lower is faster)")
