"""The package's layering, checked on the source: no module imports a module of a higher layer.

Every module under python/ets_async is parsed with ``ast`` (nothing is imported, so this needs neither
the Rust extension nor vLLM) and each of its imports of ``ets_async.*`` is resolved to a module, at any
depth of the file: imports inside functions and under ``TYPE_CHECKING`` count like the others. Importing
``a.b.c`` also runs the packages ``a`` and ``a.b``, so those count too (except the root package: every
import runs ``ets_async/__init__.py``, the public facade, which is why it sits in the ``api`` layer).

docs/ARCHITECTURE.md has the same table ("Layers"); ``test_architecture_md_lists_these_layers`` keeps
the two equal.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "python" / "ets_async"
ARCHITECTURE = ROOT / "docs" / "ARCHITECTURE.md"

LAYERS: list[tuple[str, list[str]]] = [
    # Lowest first. A module may import modules of its own layer and of lower layers only.
    # "name/" is a package with all its modules; "__init__" is the root package (the public facade).
    (
        "base",
        [
            "errors",
            "types",
            "records",
            "registry",
            "config",
            "metrics",
            "arithmetic",
            "answers",
            "math_verify_pool",
            "math_verify_worker",
            "grading",
            "voting",
            "stopping",
            "datasets",
            "models",
            "verifier_checkpoint",
            "watchdog",
            "stdio",
        ],
    ),
    ("core", ["_core", "solver", "core"]),
    ("backends", ["backends/", "batching", "testing", "supervisor"]),
    ("search", ["search/"]),
    ("api", ["api", "__init__"]),
    (
        "edges",
        [
            "app",
            "report",
            "results",
            "progress",
            "plots",
            "calibrate",
            "local_servers",
            "ray_batch",
            "openai_api",
            "verifier/",
        ],
    ),
    ("commands", ["cli", "service", "__main__"]),
]

ALLOWED: dict[tuple[str, str], str] = {
    # (importer, imported): why this upward import exists. Each entry must still be an upward import,
    # so a fixed one has to be removed from here. None today.
}


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    path: Path
    line: int
    where: str  # "", "inside a function" or "under TYPE_CHECKING"
    via: str  # the module the statement names; ``imported`` is it or a package that importing it runs


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted name relative to the package ("" for the root) -> (file, is a package). Extension modules
    count by their stub (``_core.pyi``): the compiled file is a build output."""
    found: dict[str, tuple[Path, bool]] = {}
    for path in sorted(PACKAGE.rglob("*.py*")):
        if path.suffix not in (".py", ".pyi") or "__pycache__" in path.parts:
            continue
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        if path.suffix == ".pyi":
            if path.with_suffix(".py").exists():
                continue
            found[name] = (path, False)  # no source to parse: it imports nothing of ours
        else:
            found[name] = (path, is_package)
    return found


MODULES = _modules()


def _token(module: str) -> str:
    """How LAYERS spells a module: its exact name, or "__init__" for the root."""
    return module or "__init__"


def layer_of(module: str) -> str | None:
    """The layer of a module: its own entry, else that of the innermost package entry holding it."""
    best: tuple[int, str] | None = None
    for layer, entries in LAYERS:
        for entry in entries:
            if entry == _token(module):
                return layer
            package = entry.removesuffix("/")
            if entry.endswith("/") and (module == package or module.startswith(package + ".")):
                if best is None or len(package) > best[0]:
                    best = (len(package), layer)
    return best[1] if best else None


RANK = {layer: i for i, (layer, _) in enumerate(LAYERS)}


def _resolve(dotted: str) -> str | None:
    """The module an absolute ``ets_async...`` name refers to (its longest prefix that is one), relative
    to the package; None for a name outside the package."""
    if dotted != "ets_async" and not dotted.startswith("ets_async."):
        return None
    parts = dotted.split(".")[1:]
    while parts and ".".join(parts) not in MODULES:
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(node: ast.Import | ast.ImportFrom, own_package: list[str]) -> list[str]:
    """The modules of ours that one import statement imports."""
    if isinstance(node, ast.Import):
        return [t for alias in node.names if (t := _resolve(alias.name)) is not None]
    if node.level:
        base = own_package[: len(own_package) - (node.level - 1)]
        absolute = ".".join(base + ([node.module] if node.module else []))
    else:
        absolute = node.module or ""
    if (module := _resolve(absolute)) is None:
        return []
    found = []
    for alias in node.names:  # "from X import name": the submodule X.name if there is one, else X
        submodule = f"{module}.{alias.name}".lstrip(".")
        found.append(submodule if submodule in MODULES else module)
    return list(dict.fromkeys(found))


def imports_of(module: str) -> list[Import]:
    """Every import of a module of ours in ``module``'s source, at any depth."""
    path, is_package = MODULES[module]
    if path.suffix == ".pyi":
        return []
    own_package = ["ets_async", *(module.split(".") if module else [])]
    if not is_package:
        own_package = own_package[:-1]
    found: list[Import] = []

    def walk(node: ast.AST, where: str) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for target in _targets(node, own_package):
                found.append(Import(module, target, path, node.lineno, where, target))
                parents = target.split(".")[:-1]
                for i in range(1, len(parents) + 1):  # the packages that importing it runs
                    package = ".".join(parents[:i])
                    if not (module == package or module.startswith(package + ".")):
                        found.append(Import(module, package, path, node.lineno, where, target))
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                walk(child, "under TYPE_CHECKING")
            for child in node.orelse:
                walk(child, where)
            return
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and not where:
            where = "inside a function"
        for child in ast.iter_child_nodes(node):
            walk(child, where)

    walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)), "")
    return [i for i in found if i.imported != module]


ALL_IMPORTS = [i for module in MODULES for i in imports_of(module)]


def _describe(i: Import) -> str:
    notes = [i.where] if i.where else []
    if i.via != i.imported:
        notes.append(f"the package of {i.via}")
    where = f" ({'; '.join(notes)})" if notes else ""
    return (
        f"{_token(i.importer)} ({layer_of(i.importer)}) imports {_token(i.imported)} ({layer_of(i.imported)}) "
        f"at {i.path.relative_to(ROOT)}:{i.line}{where}"
    )


def _upward(i: Import) -> bool:
    low, high = layer_of(i.importer), layer_of(i.imported)
    return low is not None and high is not None and RANK[high] > RANK[low]


def test_every_module_has_a_layer():
    unplaced = sorted(_token(m) for m in MODULES if layer_of(m) is None)
    assert not unplaced, (
        f"modules in no layer of tests/test_layers.py LAYERS (place them, and in docs/ARCHITECTURE.md): {unplaced}"
    )


def test_every_layer_entry_names_a_module_once():
    entries = [entry for _, names in LAYERS for entry in names]
    assert len(entries) == len(set(entries)), "an entry of LAYERS is listed twice"
    tokens = {_token(m) for m in MODULES}
    stale = [e for e in entries if e.removesuffix("/") not in tokens]
    assert not stale, f"LAYERS names modules that do not exist: {stale}"
    packages = [e for e in entries if e.endswith("/")]
    assert all(MODULES[e.removesuffix("/")][1] for e in packages), "a 'name/' entry must be a package"


def test_no_module_imports_a_higher_layer():
    violations = [_describe(i) for i in ALL_IMPORTS if _upward(i) and (i.importer, i.via) not in ALLOWED]
    assert not violations, (
        "imports of a higher layer (fix the import, or move a module in LAYERS and docs/ARCHITECTURE.md):\n  "
        + "\n  ".join(violations)
    )


def test_every_allowed_exception_is_still_an_upward_import():
    upward = {(i.importer, i.via) for i in ALL_IMPORTS if _upward(i)}
    stale = [pair for pair in ALLOWED if pair not in upward]
    assert not stale, f"ALLOWED lists imports that are gone or no longer upward; remove them: {stale}"


def test_the_checker_sees_imports_at_every_depth():
    """Guards the checker itself: known imports of each kind are found and resolved."""
    found = {(i.importer, i.imported, i.where, i.via) for i in ALL_IMPORTS}
    assert ("search.loop", "core", "", "core") in found  # from ..core import SearchTree
    assert ("search.loop", "search", "", "search") in found  # from . import METHODS
    assert ("search.ets", "config", "under TYPE_CHECKING", "config") in found
    assert ("backends", "models", "inside a function", "models") in found  # from .. import models
    assert ("verifier.features", "backends", "", "backends.vllm_policy") in found  # runs backends/__init__
    assert ("core", "_core", "", "_core") in found  # from ets_async import _core


def _documented_layers() -> list[tuple[str, list[str]]]:
    """The rows of ARCHITECTURE.md's layer table: ``| layer | `a`, `b/`, ... | what it is |``."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    assert "\n## Layers\n" in text, "docs/ARCHITECTURE.md has no '## Layers' section"
    section = text.split("\n## Layers\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) >= 2 and cells[0].strip("*") in RANK:
            rows.append((cells[0].strip("*"), re.findall(r"`([^`]+)`", cells[1])))
    return rows


def test_architecture_md_lists_these_layers():
    documented = [(layer, sorted(names)) for layer, names in _documented_layers()]
    expected = [(layer, sorted(names)) for layer, names in LAYERS]
    assert documented == expected, (
        f"docs/ARCHITECTURE.md's layer table differs from tests/test_layers.py LAYERS:\n"
        f"  documented {documented}\n  expected   {expected}"
    )
    assert "tests/test_layers.py" in ARCHITECTURE.read_text(encoding="utf-8")
