"""The core never touches the world (STYLE.md rule 1).

The modules below must not import clocks, sockets, threads, processes, the
OS or msgpack, and must never call the module-level ``random`` functions:
time enters as ticks and randomness as a constructor argument. A test over
the real files, and tests showing the check itself catches each offence.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mydns_lab"
PURE_MODULES = ["raft.py", "log.py", "quorum.py", "progress.py", "raftkv.py", "host.py", "faults.py", "records.py",
                "invariants.py", "simnet.py", "clerks.py", "storage.py",
                # The DNS side: bytes in, bytes out, the clock passed in as now_s.
                # tsig.py's KeyRing.load opens the keys file (a builtin, not an
                # import), as docs/architecture.md says.
                "dnswire.py", "dnsfront.py", "dnscache.py", "tsig.py"]
BANNED_IMPORTS = {"time", "socket", "threading", "os", "multiprocessing", "msgpack",
                  "asyncio", "select", "subprocess", "datetime"}


def offences(source: str) -> list[str]:
    """What in ``source`` reaches outside a pure module."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names
                      if a.name.split(".")[0] in BANNED_IMPORTS]
        elif isinstance(node, ast.ImportFrom):
            if node.module and node.level == 0 and node.module.split(".")[0] in BANNED_IMPORTS:
                found.append(f"from {node.module} import ...")
            if node.module == "random" and node.level == 0:
                found += [f"from random import {a.name}" for a in node.names if a.name != "Random"]
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
              and node.value.id == "random" and node.attr != "Random"):
            found.append(f"random.{node.attr}")
    return found


@pytest.mark.parametrize("module", PURE_MODULES)
def test_core_module_is_pure(module: str) -> None:
    path = PACKAGE / module
    assert path.exists(), f"{path} is listed as a pure module but does not exist"
    bad = offences(path.read_text())
    assert not bad, f"{module} reaches outside the pure core: {bad}"


@pytest.mark.parametrize("source, offence", [
    ("import time", "import time"),
    ("import os.path", "import os.path"),
    ("from socket import socket", "from socket import ..."),
    ("import threading as t", "import threading"),
    ("from multiprocessing import Pipe", "from multiprocessing import ..."),
    ("import msgpack", "import msgpack"),
    ("import random\nx = random.random()", "random.random"),
    ("import random\nrandom.shuffle([])", "random.shuffle"),
    ("from random import choice", "from random import choice"),
])
def test_purity_check_catches(source: str, offence: str) -> None:
    assert offence in offences(source)


def test_purity_check_allows_injected_rng() -> None:
    assert offences("import random\nrng: random.Random = random.Random(1)\nrng.random()") == []
