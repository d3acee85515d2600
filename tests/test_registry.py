"""The registry (a leaf of names and method settings) agrees with the implementations registered
under those names, and configuration does not import search or backend code."""

from __future__ import annotations

import ast
from pathlib import Path

import ets_async
from ets_async import METHODS, SearchConfig
from ets_async.backends.prm_kinds import PRM_KINDS
from ets_async.registry import METHOD_CHOICES, PRM_NAMES, method_settings


def test_every_method_name_has_its_implementation_with_the_declared_settings():
    assert list(METHODS) == [c.name for c in METHOD_CHOICES]
    for name, factory in METHODS.items():
        assert factory.settings is method_settings(name), name
        if factory.settings is not None:  # SearchConfig carries them, flat
            assert set(factory.settings.model_fields) <= set(SearchConfig.model_fields)


def test_every_prm_name_has_its_kind():
    assert list(PRM_KINDS) == list(PRM_NAMES)


def test_configuration_imports_no_search_or_backend_code():
    """config.py and registry.py are leaves: an import of search/, backends/ or the Rust core from them
    (at any level of the file) would bring back the cycle the registry removed."""
    package = Path(ets_async.__file__).parent
    for name in ("config.py", "registry.py"):
        tree = ast.parse((package / name).read_text())
        imported = {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level > 0}
        imported |= {
            alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level > 0 and not node.module
            for alias in node.names
        }  # fmt: skip
        assert not {m.split(".")[0] for m in imported} & {"search", "backends", "core", "_core"}, (name, imported)
