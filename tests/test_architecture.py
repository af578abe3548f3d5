"""The package's shape: imports point one way, never in a cycle, and the cache stands alone.

Reads the source with ``ast`` (nothing is imported), so a violation is found even in a module
no test loads. Imports under ``if TYPE_CHECKING:`` are hints, not dependencies, and are skipped.
"""

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# Lower layers never import higher ones; components on one layer never import each other.
# cli -> batch -> engine -> pose / pipeline -> config -> models / media -> cache -> errors
# The cache imports nothing but errors, so it sits at the bottom: media and batch write
# their files with its atomic_write.
LAYERS = {
    "errors": 0,
    "cache": 1,
    "media": 2,
    "models": 2,
    "config": 3,
    "pose": 4,
    "pipeline": 4,
    "engine": 5,
    "testing": 5,
    "batch": 6,
    "cli": 7,
}


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in sorted((SRC / "mimicache").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        package = parts[-1] == "__init__"
        if package:
            parts = parts[:-1]
        out[".".join(parts)] = (path, package)
    return out


def _hint_only_nodes(tree: ast.AST) -> set[int]:
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = getattr(test, "id", None) or getattr(test, "attr", None)
            if name == "TYPE_CHECKING":
                skip.update(id(sub) for sub in ast.walk(node))
    return skip


def _resolve(name: str, modules) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """module -> the mimicache modules it imports (a submodule import counts its packages)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, (path, package) in modules.items():
        tree = ast.parse(path.read_text())
        skip = _hint_only_nodes(tree)
        here = name if package else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets.add(base)
                targets.update(f"{base}.{alias.name}" for alias in node.names)
        edges = set()
        for target in targets:
            if target.startswith("mimicache") and (resolved := _resolve(target, modules)):
                edges.add(resolved)
                parent = resolved.rpartition(".")[0]
                while parent and parent != "mimicache" and not name.startswith(parent + "."):
                    edges.add(parent)  # importing a submodule runs its package's __init__
                    parent = parent.rpartition(".")[0]
        edges.discard(name)
        graph[name] = edges
    return graph


def _component(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_no_import_cycles():
    graph = import_graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node, trail):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*trail[trail.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_the_cache_imports_nothing_but_errors():
    graph = import_graph()
    outside = sorted(
        f"{m} -> {t}"
        for m, targets in graph.items()
        if _component(m) == "cache"
        for t in targets
        if _component(t) not in ("cache", "errors")
    )
    assert outside == []


def test_imports_point_down_the_layers():
    graph = import_graph()
    assert set(LAYERS) >= {c for m in graph if (c := _component(m))}, (
        "a new component needs a layer"
    )
    wrong = []
    for module, targets in graph.items():
        source = _component(module)
        if source is None:  # the top-level package only re-exports, lazily
            continue
        for target in targets:
            dest = _component(target)
            if dest is None or dest == source:
                continue
            if LAYERS[dest] >= LAYERS[source]:
                wrong.append(f"{module} -> {target}")
    assert sorted(wrong) == []


def test_the_checker_sees_violations(tmp_path, monkeypatch):
    """The rules above can fail: a planted upward import and cycle are reported."""
    fake = tmp_path / "mimicache"
    (fake / "cache").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "errors.py").write_text("")
    (fake / "cache" / "__init__.py").write_text("from mimicache.engine import x\n")
    (fake / "engine.py").write_text("import mimicache.cache\nx = 1\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path)
    graph = import_graph()
    assert graph["mimicache.cache"] == {"mimicache.engine"}
    assert graph["mimicache.engine"] == {"mimicache.cache"}
    try:
        test_no_import_cycles()
    except AssertionError:
        pass
    else:  # pragma: no cover - the checker is broken
        raise AssertionError("the planted cycle was not found")


def test_modules_stay_small():
    """No source file over 450 lines (the house rule is about 400)."""
    long = sorted(
        f"{path.relative_to(SRC)} {n}"
        for path, _ in _modules().values()
        if (n := len(path.read_text().splitlines())) > 450
    )
    assert long == []
