"""The package has no import cycle, counting imports inside functions too: each module can be
read (and changed) after the ones it imports."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ablate"


def module_graph() -> dict[str, set[str]]:
    """``ablate.x.y`` → the ``ablate`` modules it imports anywhere in its file."""
    files = {}
    for p in PACKAGE.rglob("*.py"):
        parts = p.relative_to(PACKAGE.parent).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets = [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in files:  # `from ablate.x import name` → ablate.x
                    t = t.rpartition(".")[0]
                if t and t != mod:
                    graph[mod].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_finder_sees_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle():
    graph = module_graph()
    assert "ablate.study.driver" in graph["ablate.study.runner"]  # the graph is read
    assert cycles(graph) == []


def test_the_engine_types_are_a_leaf():
    assert module_graph()["ablate.engine.types"] == set()
    assert "ablate.tricks" not in module_graph()["ablate.engine.trainer"]


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for w in graph[todo.pop()]:
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


def test_the_data_layer_by_role():
    """Datasets read data and import no pipeline; pipelines import no source; the
    classification side reaches no detection module."""
    graph = module_graph()
    data = [m for m in graph if m.startswith("ablate.data.")]
    datasets = [m for m in data if m.startswith("ablate.data.datasets.")]
    pipelines = [m for m in data if m.startswith("ablate.data.pipelines.")]
    assert {"ablate.data.datasets.imagenet", "ablate.data.datasets.voc"} <= set(datasets)
    assert {"ablate.data.pipelines.classification", "ablate.data.pipelines.transforms"
            } <= set(pipelines)
    for m in datasets:
        assert not {d for d in reachable(graph, m) if d.startswith("ablate.data.pipelines")}, m
    for m in pipelines:
        assert "ablate.data.sources" not in reachable(graph, m), m
    detection = {"ablate.data.pipelines.detection", "ablate.data.pipelines.transforms",
                 "ablate.data.pipelines.rcnn", "ablate.data.targets", "ablate.data.datasets.voc",
                 "ablate.data.datasets.coco", "ablate.data.datasets.fashion_scenes"}
    for m in ("ablate.data.pipelines.classification", "ablate.data.pipelines.tensors",
              "ablate.data.datasets.imagenet", "ablate.data.datasets.fashion_mnist"):
        assert not reachable(graph, m) & detection, m
