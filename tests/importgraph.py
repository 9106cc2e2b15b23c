"""The package's import graph, read from the source (nothing is imported):
what test_purity and test_layout check the architecture against."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE_NAME = "mydns_lab"
PACKAGE = Path(__file__).resolve().parents[1] / PACKAGE_NAME


def module_name(path: Path, root: Path = PACKAGE) -> str:
    """``mydns_lab/dns/wire.py`` -> ``mydns_lab.dns.wire``; a package's
    ``__init__.py`` is the package itself."""
    parts = (root.name,) + path.relative_to(root).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def _imported(tree: ast.AST, name: str, is_package: bool, known: set[str]) -> tuple[set[str], set[str]]:
    """(modules of the package, top-level external modules) that ``tree``
    imports anywhere, inside functions too."""
    package = name if is_package else name.rpartition(".")[0]
    internal: set[str] = set()
    external: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE_NAME:
                    internal.add(_longest_known(alias.name, known))
                else:
                    external.add(alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                target = f"{base}.{node.module}" if node.module else base
            elif node.module and node.module.split(".")[0] == PACKAGE_NAME:
                target = node.module
            else:
                external.add((node.module or "").split(".")[0])
                continue
            for alias in node.names:
                child = f"{target}.{alias.name}"
                internal.add(child if child in known else _longest_known(target, known))
    internal.discard(name)
    return internal, external


def _longest_known(dotted: str, known: set[str]) -> str:
    while dotted not in known and "." in dotted:
        dotted = dotted.rpartition(".")[0]
    return dotted


def graph(sources: dict[str, str], packages: set[str]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """From module name -> source text: (internal imports, external imports)
    per module. ``packages`` names the modules that are packages."""
    known = set(sources)
    internal, external = {}, {}
    for name, text in sources.items():
        internal[name], external[name] = _imported(ast.parse(text), name, name in packages, known)
    return internal, external


def package_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    found = modules()
    packages = {n for n, p in found.items() if p.name == "__init__.py"}
    return graph({n: p.read_text() for n, p in found.items()}, packages)


def find_circle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle as ``[a, b, ..., a]``, or None."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(node: str) -> list[str] | None:
        if node in on_path:
            return path[path.index(node):] + [node]
        if node in done:
            return None
        path.append(node)
        on_path.add(node)
        for nxt in sorted(edges.get(node, ())):
            found = visit(nxt)
            if found:
                return found
        path.pop()
        on_path.discard(node)
        done.add(node)
        return None

    for start in sorted(edges):
        found = visit(start)
        if found:
            return found
    return None


def reachable(start: str, edges: dict[str, set[str]]) -> list[str]:
    """Every module that importing ``start`` runs: what it imports, what
    those import, and the packages (``__init__``) on the way. In the order
    found, ``start`` first, so a report can name the chain's first link."""
    seen = [start]
    queue = [start]
    while queue:
        name = queue.pop(0)
        parents = [name.rsplit(".", i)[0] for i in range(1, name.count("."))]
        for nxt in sorted(edges.get(name, set())) + parents:
            if nxt in edges and nxt not in seen:
                seen.append(nxt)
                queue.append(nxt)
    return seen
