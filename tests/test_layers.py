"""Imports point down the layers: mmreward <- modalities <- judges <- integrations.

Every ``.py`` file of a package is parsed with ``ast`` and every import is checked, those inside
functions included (a lazy import is still a dependency): the core imports none of the other
three, ``modalities`` neither judges nor integrations, and ``judges`` not integrations.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("mmreward", "modalities", "judges", "integrations")


def imported_packages(source: str, module: str) -> list[tuple[int, str]]:
    """``(line, top-level package)`` of every import in ``source`` (relative imports resolved)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: it stays in the importing file's package
                found.append((node.lineno, module.split(".")[0]))
            elif node.module:
                found.append((node.lineno, node.module.split(".")[0]))
    return found


def upward_imports(package: str) -> list[str]:
    """``file:line imports X`` for every import of a layer above ``package``."""
    above = set(LAYERS[LAYERS.index(package) + 1 :])
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for line, top in imported_packages(path.read_text(), module):
            if top in above:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {top}")
    return bad


@pytest.mark.parametrize("package", LAYERS[:-1])
def test_no_package_imports_a_layer_above_it(package):
    assert upward_imports(package) == []


def test_the_walk_sees_imports_inside_functions():
    source = "import os\n\ndef f():\n    from judges.base import x\n    import integrations.demos\n"
    assert imported_packages(source, "mmreward.cli") == [(1, "os"), (4, "judges"), (5, "integrations")]


def test_a_planted_upward_import_is_caught(tmp_path, monkeypatch):
    (tmp_path / "modalities").mkdir()
    (tmp_path / "modalities" / "bad.py").write_text("def f():\n    from judges.base import GenerativeJudge\n")
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    assert upward_imports("modalities") == ["modalities/bad.py:2 imports judges"]


def module_graph() -> dict[str, set[str]]:
    """Module -> the modules of the four packages it imports (anywhere in the file)."""
    paths = {}
    for package in LAYERS:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            paths[name] = path
    graph = {}
    for name, path in paths.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        graph[name] = {t for t in targets if t in paths and t != name}
    return graph


def cycle_through(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """A path of imports from ``start`` back to itself, or None."""
    stack, seen = [(start, [start])], set()
    while stack:
        node, path = stack.pop()
        for nxt in graph[node]:
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def test_no_module_imports_itself_in_a_circle():
    graph = module_graph()
    assert graph["mmreward.cli"] and graph["mmreward.data.formats"]  # the walk sees their imports
    circles = [c for c in (cycle_through(graph, m) for m in sorted(graph)) if c]
    assert circles == []
    graph["mmreward.data.files"].add("mmreward.data.formats")  # a planted circle is found
    assert cycle_through(graph, "mmreward.data.formats") is not None
