"""The core never touches the world (STYLE.md rule 1).

The modules below, and every module they import however indirectly, must
not import clocks, sockets, threads, processes, the OS or msgpack, and must
never call the module-level ``random`` functions: time enters as ticks,
randomness as a constructor argument, bytes through a codec the host passes
in. A test over the real files, and tests showing the check itself catches
each offence, directly and through imports.
"""

from __future__ import annotations

import ast
import pytest

from tests import importgraph

PURE = [
    # The consensus core and what sits right on it.
    "mydns_lab.core", "mydns_lab.raft", "mydns_lab.raftkv", "mydns_lab.clerks",
    "mydns_lab.protocol", "mydns_lab.records", "mydns_lab.host",
    "mydns_lab.storage.base", "mydns_lab.storage.filetypes",
    # The fault layer and the simulator's network and checks.
    "mydns_lab.net.faults", "mydns_lab.sim.network", "mydns_lab.sim.invariants",
    # DNS: bytes in, bytes out, the clock passed in as now_s. tsig's
    # KeyRing.load opens the keys file (a builtin, not an import), as
    # docs/architecture.md says.
    "mydns_lab.dns",
]
"""Modules (or whole packages) that must stay pure, with everything they import."""
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


def impurities(sources: dict[str, str], packages: set[str], pure: list[str]) -> list[str]:
    """Every way a module under ``pure`` reaches outside the pure core,
    directly or through any module it imports, as ``pure -> reached: offence``."""
    internal, _ = importgraph.graph(sources, packages)
    roots = [m for m in sources if any(m == p or m.startswith(p + ".") for p in pure)]
    found = []
    for root in roots:
        for reached in importgraph.reachable(root, internal):
            found += [f"{root} -> {reached}: {bad}" for bad in offences(sources[reached])]
    return found


def test_pure_modules_exist() -> None:
    known = importgraph.modules()
    missing = [p for p in PURE if p not in known]
    assert not missing, f"listed as pure but not in the package: {missing}"


def test_pure_modules_reach_nothing_impure() -> None:
    found = importgraph.modules()
    packages = {n for n, p in found.items() if p.name == "__init__.py"}
    bad = impurities({n: p.read_text() for n, p in found.items()}, packages, PURE)
    assert not bad, "the pure core reaches outside itself:\n" + "\n".join(bad)


def test_purity_check_follows_imports() -> None:
    """An import of an impure module taints the importer, however far down."""
    sources = {"mydns_lab": "", "mydns_lab.a": "from .b import f",
               "mydns_lab.b": "from .c import g\ndef f(): pass",
               "mydns_lab.c": "def g():\n    import msgpack"}
    assert impurities(sources, {"mydns_lab"}, ["mydns_lab.a"]) == [
        "mydns_lab.a -> mydns_lab.c: import msgpack"]
    sources["mydns_lab.c"] = "def g(): pass"
    assert impurities(sources, {"mydns_lab"}, ["mydns_lab.a"]) == []


def test_purity_check_runs_package_inits() -> None:
    """Importing ``pkg.mod`` runs ``pkg/__init__.py`` too."""
    sources = {"mydns_lab": "", "mydns_lab.pkg": "import time", "mydns_lab.pkg.mod": "",
               "mydns_lab.user": "from .pkg.mod import x"}
    assert impurities(sources, {"mydns_lab", "mydns_lab.pkg"}, ["mydns_lab.user"]) == [
        "mydns_lab.user -> mydns_lab.pkg: import time"]


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
