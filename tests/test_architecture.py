"""The package's shape: imports point one way, never in a cycle, and the cache stands alone.

Reads the source with ``ast`` (nothing is imported), so a violation is found even in a module
no test loads. Imports under ``if TYPE_CHECKING:`` are hints, not dependencies, and are skipped.
"""

import ast
import re
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# Lower layers never import higher ones; components on one layer never import each other.
# cli -> batch -> engine -> quality -> pose / pipeline -> config -> models / media -> cache
#   -> storage -> errors / lazy
# The cache stores tensors and knows nothing above it; files and URLs (atomic writes, object
# stores, digests) are storage's, below it, so config, media and batch never need the cache.
LAYERS = {
    "errors": 0,
    "lazy": 0,  # a package's lazy exports; imports nothing of mimicache
    "storage": 1,  # files and URLs: atomic writes, locks, object stores, fetch, digests, sizes
    "cache": 2,
    "media": 3,
    "models": 3,
    "config": 4,
    "pose": 5,
    "pipeline": 5,
    "quality": 6,  # scores of finished clips: pose keypoints in, no models
    "engine": 7,
    "testing": 7,
    "batch": 8,
    "cli": 9,
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


def _dynamic_targets(tree: ast.Module, skip: set[int]) -> set[str]:
    """Modules named to ``importlib.import_module`` / ``__import__``, and lazy re-exports.

    A module with a module-level ``__getattr__`` resolves names on first use, so every
    "mimicache..." string in it is a module it may import (a table of lazy exports).
    """
    targets: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip or not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        called = getattr(func, "id", None) or getattr(func, "attr", None)
        first = node.args[0]
        if called in ("import_module", "__import__") and isinstance(first, ast.Constant):
            targets.add(str(first.value))
    if any(isinstance(n, ast.FunctionDef) and n.name == "__getattr__" for n in tree.body):
        targets.update(
            node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value.startswith("mimicache.")
        )
    return targets


def source_imports(source: str, name: str, package: bool) -> set[str]:
    """Every module name one source imports: statements, importlib calls, lazy re-exports."""
    tree = ast.parse(source)
    skip = _hint_only_nodes(tree)
    here = name if package else name.rpartition(".")[0]
    targets = _dynamic_targets(tree, skip)
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
    return targets


def import_graph() -> dict[str, set[str]]:
    """module -> the mimicache modules it imports (a submodule import counts its packages)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, (path, package) in modules.items():
        targets = source_imports(path.read_text(), name, package)
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


def test_the_cache_imports_nothing_but_errors_and_storage():
    graph = import_graph()
    outside = sorted(
        f"{m} -> {t}"
        for m, targets in graph.items()
        if _component(m) == "cache"
        for t in targets
        if _component(t) not in ("cache", "errors", "storage")
    )
    assert outside == []


def test_nothing_reaches_into_the_cache_for_files_or_urls():
    """config, media and batch take file and URL helpers from storage: below them, the
    cache is the feature store alone."""
    graph = import_graph()
    wrong = sorted(
        f"{m} -> {t}"
        for m, targets in graph.items()
        if _component(m) in ("config", "media")
        for t in targets
        if _component(t) == "cache"
    )
    assert wrong == []


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """ "module -> target" for every import that points up a layer or across one."""
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
    return sorted(wrong)


def test_imports_point_down_the_layers():
    graph = import_graph()
    assert set(LAYERS) >= {c for m in graph if (c := _component(m))}, (
        "a new component needs a layer"
    )
    assert upward_imports(graph) == []


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


def test_the_checker_sees_dynamic_imports():
    """importlib, ``__import__`` and a lazy ``__getattr__`` table count as imports too."""
    through_importlib = (
        "import importlib\n"
        "def load():\n"
        "    return importlib.import_module('mimicache.pipeline.weights')\n"
    )
    through_dunder = "x = __import__('mimicache.batch.executing.job_loop')\n"
    lazy_table = (
        "import importlib\n"
        "_MOVED = {'load_pipeline': 'mimicache.pipeline.weights'}\n"
        "def __getattr__(name):\n"
        "    return getattr(importlib.import_module(_MOVED[name]), name)\n"
    )
    hinted = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    import importlib\n"
        "    importlib.import_module('mimicache.cli')\n"
    )
    assert "mimicache.pipeline.weights" in source_imports(
        through_importlib, "mimicache.models", True
    )
    assert "mimicache.batch.executing.job_loop" in source_imports(
        through_dunder, "mimicache.storage.files", False
    )
    assert "mimicache.pipeline.weights" in source_imports(lazy_table, "mimicache.models", True)
    assert not any(t.startswith("mimicache") for t in source_imports(hinted, "mimicache.x", False))
    # a string that merely names a module is not an import without a lazy __getattr__
    assert source_imports("NOTE = 'mimicache.cli'\n", "mimicache.storage.files", False) == set()


def test_the_layer_rule_fails_on_a_lazy_upward_alias(tmp_path, monkeypatch):
    """The alias models -> pipeline.weights, through importlib, is an upward import."""
    fake = tmp_path / "mimicache"
    (fake / "models").mkdir(parents=True)
    (fake / "pipeline").mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "pipeline" / "__init__.py").write_text("")
    (fake / "pipeline" / "weights.py").write_text("import mimicache.models\n")
    (fake / "models" / "__init__.py").write_text(
        "import importlib\n"
        "def __getattr__(name):\n"
        "    return getattr(importlib.import_module('mimicache.pipeline.weights'), name)\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path)
    graph = import_graph()
    assert "mimicache.pipeline.weights" in graph["mimicache.models"]
    assert "mimicache.models -> mimicache.pipeline.weights" in upward_imports(graph)


DOC = SRC.parent / "docs" / "architecture.md"


def documented_modules(text: str) -> set[str]:
    """The modules the doc's table lists: its first column's `path.py`s."""
    return set(re.findall(r"^\| `([\w/]+\.py)` \|", text, flags=re.MULTILINE))


def test_every_module_is_on_the_map():
    """docs/architecture.md lists each module under src/ once, and no module that is gone."""
    on_disk = {path.relative_to(SRC / "mimicache").as_posix() for path, _ in _modules().values()}
    listed = documented_modules(DOC.read_text())
    assert sorted(on_disk - listed) == [], "modules missing from docs/architecture.md"
    assert sorted(listed - on_disk) == [], "docs/architecture.md names modules that do not exist"


def test_the_map_check_reads_rows_only():
    text = (
        "| module | what it is | imports |\n| --- | --- | --- |\n"
        "| `cache/fs.py` | atomic writes | errors |\n"
        "| `cli/main.py` | entry point | batch |\n"
        "Prose that mentions `pose/draw.py` is not a row.\n"
    )
    assert documented_modules(text) == {"cache/fs.py", "cli/main.py"}
