"""Scripted backends for unit tests of the search logic; they live in ``ets_async.testing``."""

from ets_async.testing import FakeEmbedder, FakePolicy, FakePRM, _unit

__all__ = ["FakeEmbedder", "FakePRM", "FakePolicy", "_unit"]
