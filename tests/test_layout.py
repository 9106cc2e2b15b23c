"""The package's shape, as docs/architecture.md draws it: each folder one
concept, dependencies pointing one way, no import circle, small modules,
one msgpack importer, and a wheel that carries every subpackage.

Read from the source (nothing is imported), with tests showing the checks
themselves catch what they look for.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests import importgraph

REPO = importgraph.PACKAGE.parent
MAX_TOP_LEVEL_MODULES = 14
MAX_MODULE_LINES = 800

MAY_IMPORT: dict[str, set[str]] = {
    # unit (a folder or a top-level module) -> the units it may import.
    # The same table is docs/architecture.md's folder map.
    "cmdline": set(),
    "reports": set(),
    "admission": {"records"},
    "core": set(),
    "protocol": {"core"},
    "records": {"protocol"},
    "clerks": {"core", "protocol"},
    "storage": {"core", "codec"},
    "codec": {"core", "protocol", "reports"},
    "raft": {"core", "storage"},
    "raftkv": {"core", "protocol", "raft", "records"},
    "host": {"core", "raft", "raftkv", "storage"},
    "linearizability": {"cmdline"},
    "dns": {"protocol", "records"},
    "net": {"core", "clerks", "codec", "protocol", "reports"},
    "clients": {"cmdline", "records"},
    "web": {"admission", "net", "protocol", "records"},
    "etcd": {"clerks", "cmdline", "net", "protocol", "records"},
    "service": {"admission", "clerks", "dns", "etcd", "net", "protocol", "records", "reports",
                "web"},
    "lab": {"admission", "cmdline", "codec", "core", "dns", "etcd", "host", "net", "protocol",
            "raft", "raftkv", "records", "reports", "service", "storage", "web"},
    "sim": {"clerks", "cmdline", "codec", "core", "host", "linearizability", "net", "protocol",
            "raft", "raftkv", "storage"},
    "experiments": {"clients", "cmdline", "lab", "linearizability"},
    "__main__": {"admission", "clients", "cmdline", "etcd", "experiments", "lab", "net"},
    "analysis": {"experiments"},
}


def unit_of(module: str) -> str:
    """``mydns_lab.dns.wire`` -> ``dns``; ``mydns_lab.raft`` -> ``raft``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def unit_dependencies(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for module, targets in edges.items():
        unit = unit_of(module)
        found.setdefault(unit, set()).update(unit_of(t) for t in targets if unit_of(t) != unit)
    found.pop("", None)
    return found


def test_no_import_circle_among_modules() -> None:
    edges, _ = importgraph.package_graph()
    circle = importgraph.find_circle(edges)
    assert circle is None, "an import circle: " + " -> ".join(circle or [])


def test_circle_check_catches_a_circle() -> None:
    """Also one closed by an import inside a function, as the checker's
    command line once did."""
    sources = {"mydns_lab": "", "mydns_lab.a": "from .b import x",
               "mydns_lab.b": "def x():\n    from .c import y", "mydns_lab.c": "from .a import z"}
    edges, _ = importgraph.graph(sources, {"mydns_lab"})
    assert importgraph.find_circle(edges) == ["mydns_lab.a", "mydns_lab.b", "mydns_lab.c",
                                              "mydns_lab.a"]
    sources["mydns_lab.c"] = ""
    assert importgraph.find_circle(importgraph.graph(sources, {"mydns_lab"})[0]) is None


def test_dependencies_point_one_way() -> None:
    edges, _ = importgraph.package_graph()
    actual = unit_dependencies(edges)
    unknown = sorted(set(actual) - set(MAY_IMPORT))
    assert not unknown, f"units missing from MAY_IMPORT (and docs/architecture.md): {unknown}"
    wrong = {unit: sorted(deps - MAY_IMPORT[unit]) for unit, deps in actual.items()
             if deps - MAY_IMPORT[unit]}
    assert not wrong, f"imports against the folder map: {wrong}"


def test_the_folder_map_itself_has_no_circle() -> None:
    assert importgraph.find_circle(MAY_IMPORT) is None


def test_top_level_stays_small() -> None:
    top = sorted(p.name for p in importgraph.PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, f"{len(top)} top-level modules: {top}"


def test_no_module_is_too_long() -> None:
    long = {name: n for name, path in importgraph.modules().items()
            if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_msgpack_is_imported_in_one_module() -> None:
    _, external = importgraph.package_graph()
    importers = sorted(m for m, names in external.items() if "msgpack" in names)
    assert importers == ["mydns_lab.codec"]


def test_wheel_carries_every_subpackage(tmp_path: Path) -> None:
    """A bare ``packages = ["mydns_lab"]`` would build a wheel without the
    subpackages, and only an installed copy would notice."""
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "-q", "-w", str(tmp_path), str(REPO)],
        capture_output=True, text=True, timeout=240)
    assert built.returncode == 0, built.stderr
    wheels = list(tmp_path.glob("mydns_lab-*.whl"))
    assert len(wheels) == 1, wheels
    shipped = set(zipfile.ZipFile(wheels[0]).namelist())
    expected = {str(path.relative_to(REPO)) for path in importgraph.PACKAGE.rglob("*.py")}
    assert not expected - shipped, f"missing from the wheel: {sorted(expected - shipped)}"


@pytest.mark.parametrize("module, unit", [
    ("mydns_lab.dns.wire", "dns"), ("mydns_lab.raft", "raft"), ("mydns_lab.core", "core")])
def test_unit_of(module: str, unit: str) -> None:
    assert unit_of(module) == unit
