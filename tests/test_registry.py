"""The registry (a leaf of names and method settings) agrees with the implementations registered
under those names. That configuration imports no search or backend code is tests/test_layers.py's
check (config and registry are in its lowest layer)."""

from __future__ import annotations

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
