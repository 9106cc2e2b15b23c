"""etcd as the reference a benchmark measures in its own run.

What bench_lab.py and bench_stores.py compare the lab against, measured on
a three-member etcd (mydns_lab.experiments.etcdprocess.EtcdCluster) on the
same disk, within the same run, because this machine's speed drifts by
more than 2x over a day:

  check_perf            ``etcdctl check perf --load s|l`` and its verdict
  sequential_puts_ms    one put at a time through etcd's JSON gateway
                        (http.client, one kept-alive connection)
  versions              the etcd, etcdctl and Python a figure came from

check perf is a pass/fail test against a fixed offered rate (s: 150
writes/s from 50 clients; l: 8,000 from 1,000), not a maximum: its
writes/s is at most that rate, and on this machine ``--load l`` reports
etcd's own ceiling (well under 8,000).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import subprocess
import time
from urllib.parse import urlsplit

from machine import host_line  # a sibling script, not a package

CHECK_PERF_TIMEOUT_S = 180.0  # one `etcdctl check perf` (it runs ~60 s)
GATEWAY_TIMEOUT_S = 5.0

_PERF_LINE = re.compile(r"^(PASS|FAIL)(?::\s*(.*))?$")
_THROUGHPUT = re.compile(r"Throughput (?:is|too low:)\s*(\d+(?:\.\d+)?)\s*writes/s")


def _etcdctl_env() -> dict[str, str]:
    return {**os.environ, "ETCDCTL_API": "3"}


def check_perf(endpoints: str, load: str) -> dict:
    """Run ``etcdctl check perf --load <load>`` and parse its verdict lines:
    ``writes_per_s`` (None when it printed none), ``verdict`` (PASS, FAIL,
    TIMEOUT or ?), ``lines``, ``errors``, ``seconds`` and ``exit``."""
    command = ["etcdctl", f"--endpoints={endpoints}", "check", "perf", "--load", load]
    started = time.monotonic()
    try:
        done = subprocess.run(command, capture_output=True, text=True,
                              timeout=CHECK_PERF_TIMEOUT_S, env=_etcdctl_env())
    except subprocess.TimeoutExpired:
        return {"load": load, "verdict": "TIMEOUT", "writes_per_s": None, "lines": [],
                "errors": [], "seconds": time.monotonic() - started, "exit": None}
    lines = [line.strip() for line in re.split(r"[\r\n]+", done.stdout + "\n" + done.stderr)]
    verdict_lines = [line for line in lines if _PERF_LINE.match(line)]
    writes = None
    for line in verdict_lines:
        if m := _THROUGHPUT.search(line):
            writes = float(m.group(1))
    verdict = ("PASS" if "PASS" in verdict_lines else "FAIL" if "FAIL" in verdict_lines
               else "?")
    errors = [line for line in lines if line and not _PERF_LINE.match(line)
              and ("rror" in line or "failed" in line.lower())]
    return {"load": load, "verdict": verdict, "writes_per_s": writes, "lines": verdict_lines,
            "errors": errors, "seconds": time.monotonic() - started, "exit": done.returncode}


def sequential_puts_ms(endpoint: str, count: int, key: str = "mydns-bench-seq") -> list[float]:
    """``count`` puts of one key, one at a time, through the JSON gateway
    of the member at ``endpoint`` (``http://host:port``) on one kept-alive
    connection; each put's round trip in ms. Raises RuntimeError when the
    gateway refuses a put."""
    url = urlsplit(endpoint)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=GATEWAY_TIMEOUT_S)
    key64 = base64.b64encode(key.encode()).decode()
    headers = {"Content-Type": "application/json"}
    samples = []
    try:
        for i in range(count):
            body = json.dumps({"key": key64,
                               "value": base64.b64encode(f"10.0.0.{i % 250}".encode()).decode()})
            started = time.perf_counter()
            conn.request("POST", "/v3/kv/put", body, headers)
            response = conn.getresponse()
            answer = response.read()
            samples.append((time.perf_counter() - started) * 1000)
            if response.status != 200:
                raise RuntimeError(f"etcd gateway answered {response.status}: {answer[:200]!r}")
    finally:
        conn.close()
    return samples


def versions() -> list[str]:
    """One line each: etcd's version, etcdctl's, and this Python and host
    (:func:`machine.host_line`, with its speed gauge)."""
    def first_line(command: list[str]) -> str:
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=10,
                                 env=_etcdctl_env()).stdout
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{command[0]}: {exc}"
        return out.splitlines()[0] if out else f"{command[0]}: no output"
    return [first_line(["etcd", "--version"]), first_line(["etcdctl", "version"]), host_line()]
