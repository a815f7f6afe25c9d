"""The package layout is the design: what may import what, no cycles, nothing at the top level.

Rules (README, ARCHITECTURE):
- ``depthcraft.tasks.lib`` (the shared library) imports nothing else of depthcraft's;
- ``depthcraft.tasks.providers`` import the library only;
- step modules (``depthcraft.tasks.<kind>``) import the library and the providers, never another step;
- ``depthcraft.tasks`` never imports ``depthcraft.flows``;
- no module imports itself back through another (no import cycle between modules).
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOTS = {"depthcraft.flows": REPO / "flows", "depthcraft.tasks": REPO / "tasks"}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg, root in ROOTS.items():
        for f in root.rglob("*.py"):
            rel = f.relative_to(root).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([pkg, *parts])] = f
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """depthcraft modules that ``name`` imports (at any depth of the file, lazy imports included)."""
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                mod = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {m: _imports(m, p, known) for m, p in mods.items()}


def test_no_import_cycle():
    g = _graph()
    # iterative DFS (Tarjan-free): report the first cycle found
    colour: dict[str, int] = {}
    for start in g:
        if colour.get(start):
            continue
        stack = [(start, iter(sorted(g[start])))]
        colour[start] = 1
        path = [start]
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                colour[node] = 2
                stack.pop()
                path.pop()
                continue
            # a package's __init__ importing its own submodules is not a cycle of modules
            if nxt.startswith(node + ".") or node.startswith(nxt + "."):
                continue
            if colour.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
            if not colour.get(nxt):
                colour[nxt] = 1
                path.append(nxt)
                stack.append((nxt, iter(sorted(g.get(nxt, ())))))


def test_layers_import_only_downwards():
    g = _graph()
    steps = {m for m in g if m.count(".") == 2 and m.startswith("depthcraft.tasks.")
             and m not in ("depthcraft.tasks.lib", "depthcraft.tasks.providers", "depthcraft.tasks.catalog")}
    bad = []
    for m, deps in g.items():
        for d in deps:
            if m.startswith("depthcraft.tasks.lib") and not d.startswith("depthcraft.tasks.lib"):
                bad.append((m, d))
            elif m.startswith("depthcraft.tasks.providers") and not d.startswith(
                    ("depthcraft.tasks.lib", "depthcraft.tasks.providers")):
                bad.append((m, d))
            elif m in steps and (d in steps or d.startswith("depthcraft.flows")):
                bad.append((m, d))
            elif m.startswith("depthcraft.tasks") and d.startswith("depthcraft.flows"):
                bad.append((m, d))
    assert not bad, "imports against the layering: " + ", ".join(f"{a} -> {b}" for a, b in sorted(bad))
    assert steps >= {"depthcraft.tasks.estimate", "depthcraft.tasks.stereo", "depthcraft.tasks.parallax"}


def test_cycle_detector_sees_a_cycle(tmp_path, monkeypatch):
    # the detector itself must be able to fail
    (tmp_path / "a.py").write_text("from depthcraft.flows import b\n")
    (tmp_path / "b.py").write_text("from depthcraft.flows import a\n")
    monkeypatch.setitem(ROOTS, "depthcraft.flows", tmp_path)
    monkeypatch.setitem(ROOTS, "depthcraft.tasks", tmp_path / "none")
    import pytest

    with pytest.raises(AssertionError, match="import cycle"):
        test_no_import_cycle()
