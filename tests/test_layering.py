"""The house's imports run one way: no circle between modules, none between folders, and
salad_eval never reaches into salad_train. Function-level imports count: a deferred import is
still an arrow."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("salad_eval", "salad_train")


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (a package import counts as its __init__)."""
    files = {_module(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:  # `from pkg import module` names a module
                    full = f"{node.module}.{alias.name}"
                    targets.add(full if full in files else node.module)
            elif isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph, or None (depth-first search with colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _folder(module: str) -> str:
    """A module's room: its folder (a top-level module is a room of its own)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 else module


def test_no_module_imports_one_that_imports_it_back():
    assert _cycle(_graph()) is None, f"import circle: {' -> '.join(_cycle(_graph()))}"


def test_no_folder_imports_one_that_imports_it_back():
    folders: dict[str, set[str]] = {}
    for module, targets in _graph().items():
        room = _folder(module)
        folders.setdefault(room, set()).update(_folder(t) for t in targets if _folder(t) != room)
    cycle = _cycle(folders)
    assert cycle is None, f"folders import each other: {' -> '.join(cycle)}"


def test_measurement_never_imports_training():
    graph = _graph()
    wrong = [
        (m, t)
        for m, ts in graph.items()
        for t in ts
        if m.startswith("salad_eval.") or m == "salad_eval"
    ]
    assert not [(m, t) for m, t in wrong if t.startswith("salad_train")]


def test_the_checks_can_fail():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
