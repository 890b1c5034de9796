"""SynPoLib's packages import only from the layers before them, with no circle and no private name.

The layers, first to last (a module may import from its own layer and earlier ones):

====  =====================================================================
0     errors, paths
1     config
2     presets
3     io, metrics, figures, resize, preprocess, overlay (the leaves)
4     backends
5     method, registration
6     volume
7     scene, files
8     evaluation
9     cli (nothing imports it)
====  =====================================================================

Every import counts, the ones inside functions too: a lazy import is still a
dependency. Run as a script it prints the import graph's layers and edges.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Dict, List, Set, Tuple

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "SynPoLib"

LAYERS = [
    ("errors", "paths"),
    ("config",),
    ("presets",),
    ("io", "metrics", "figures", "resize", "preprocess", "overlay"),
    ("backends",),
    ("method", "registration"),
    ("volume",),
    ("scene", "files"),
    ("evaluation",),
    ("cli",),
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> Dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, name: str, known: Set[str]) -> List[Tuple[str, List[str], int]]:
    """(imported SynPoLib module, names taken from it, line) for every import in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("SynPoLib"):
                continue
            names = [a.name for a in node.names]
            # "from . import video": the module SynPoLib.volume.video
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in known]
            if submodules:
                out.extend((m, [], node.lineno) for m in submodules)
                names = [n for n in names if f"{target}.{n}" not in known]
                if not names:
                    continue
            out.append((target, names, node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("SynPoLib"):
                    out.append((alias.name, [], node.lineno))
    return out


def layer_of(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:  # the package itself: its lazy public face sits above everything
        return len(LAYERS)
    return RANK[parts[1]]


def graph():
    mods = modules()
    edges = []
    for name, path in mods.items():
        for target, names, line in imports(path, name, set(mods)):
            edges.append((name, target, names, line))
    return mods, edges


def test_every_module_has_a_layer():
    mods = modules()
    unplaced = sorted(m for m in mods if m != "SynPoLib" and m.split(".")[1] not in RANK
                      and m != "SynPoLib.__main__")
    assert not unplaced, f"modules outside every layer (add them to LAYERS): {unplaced}"


def test_imports_point_to_earlier_layers_only():
    _, edges = graph()
    upward = []
    for source, target, names, line in edges:
        if source in ("SynPoLib", "SynPoLib.__main__"):
            continue  # the lazy public face and ``python -m SynPoLib`` sit on top
        if target == "SynPoLib" and names == ["__version__"]:
            continue  # the version string is a constant of the package, not its lazy face
        if layer_of(target) > layer_of(source):
            upward.append(f"{source}:{line} imports {target}")
    assert not upward, "imports from a later layer:\n" + "\n".join(upward)


def test_nothing_imports_cli():
    _, edges = graph()
    bad = [f"{s}:{line}" for s, t, _, line in edges
           if t.startswith("SynPoLib.cli") and not s.startswith("SynPoLib.cli") and s != "SynPoLib.__main__"]
    assert not bad, f"only ``python -m SynPoLib`` may import the cli package: {bad}"


def test_no_import_circles():
    mods, edges = graph()
    adjacency: Dict[str, Set[str]] = {m: set() for m in mods}
    for source, target, _, _ in edges:
        if target in adjacency and target != source:
            adjacency[source].add(target)
    # Tarjan's strongly connected components: any component of two or more is a circle
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    circles = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in adjacency[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in adjacency:
        if v not in index:
            visit(v)
    assert not circles, f"import circles: {circles}"


def test_no_private_name_crosses_a_module():
    _, edges = graph()
    private = [f"{s}:{line} takes {n} from {t}" for s, t, names, line in edges for n in names
               if n.startswith("_") and not n.startswith("__")]
    assert not private, "private names imported across modules:\n" + "\n".join(private)


if __name__ == "__main__":
    mods, edges = graph()
    for rank, names in enumerate(LAYERS):
        print(rank, ", ".join(names))
    for source, target, names, line in sorted(edges):
        print(f"{source} -> {target} {names}")
