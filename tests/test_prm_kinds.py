"""The PRM kinds' prompt builders and read-outs, the registry, and user functions as PRMs (no engine;
tests/test_prm_engines.py runs every kind on a real one)."""

from __future__ import annotations

import pytest
from ets_async import SearchConfig, solve_many
from ets_async.backends.prm_kinds import (
    PRM_KINDS,
    LabelPRM,
    PoolingPRM,
    as_prm,
    at_separator,
    label_probability,
    newest_step_reward,
    shepherd_text,
    verifier_prm,
)
from ets_async.backends.protocols import ProblemScope, ScoreRequest
from ets_async.config import EngineConfig

from .fakes import FakeEmbedder, FakePolicy

SEP = 9


def test_every_kind_is_registered_under_its_own_name():  # and every configurable name has one: test_registry.py
    assert {k.name for k in PRM_KINDS.values()} == set(PRM_KINDS)


def test_newest_step_reward_reads_rows_aligned_with_the_end_of_the_prompt():
    ids = [1, 2, SEP, 3, SEP, 4]
    rows = [[0.9, 0.1], [0.5, 0.5], [0.8, 0.2], [0.5, 0.5], [0.3, 0.7], [0.5, 0.5]]
    assert newest_step_reward(ids, rows, SEP) == pytest.approx(0.7)
    assert newest_step_reward(ids, rows[-3:], SEP) == pytest.approx(0.7)  # a cached prefix: rows for the rest only
    assert newest_step_reward(ids, rows[-1:], SEP) is None  # no separator computed: the child is dropped
    with pytest.raises(ValueError, match="rows"):
        newest_step_reward(ids, rows + rows, SEP)


def test_label_probability_bounds_a_missing_label_by_the_smallest_returned():
    assert label_probability({7: -0.1, 8: -2.4}, 7, 8) == pytest.approx(1 / (1 + pow(2.718281828459045, -2.3)))
    assert label_probability({7: -0.1, 5: -3.0}, 7, 8) == pytest.approx(1 / (1 + pow(2.718281828459045, -2.9)))


def test_shepherd_text_ends_every_step_with_the_tag():
    assert shepherd_text("Q?", [" a ", "b"]) == "Q? a ки\nb ки"


class RecordingTransport:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[int], object]] = []

    async def label_logprobs(self, token_ids, label_ids, *, scope=None):
        self.calls.append(("label", list(token_ids), scope))
        return {label_ids[0]: -0.5, label_ids[1]: -1.5}

    async def pool(self, token_ids, *, scope=None):
        self.calls.append(("pool", list(token_ids), scope))
        return [[0.4, 0.6] if t == SEP else [0.5, 0.5] for t in token_ids]


@pytest.mark.asyncio
async def test_kinds_send_their_prompt_and_the_problem_scope_through_the_transport():
    transport = RecordingTransport()
    scope = ProblemScope("p")
    label = LabelPRM(transport, lambda r: [*r.token_ids, 0], positive=7, negative=8)
    pooling = PoolingPRM(transport, lambda r: [*r.token_ids, SEP, 3], at_separator(SEP))
    verifier = verifier_prm(transport, None)
    request = ScoreRequest((1, 2), "q", ("s",), scope)
    assert await label.score([request]) == pytest.approx([1 / (1 + pow(2.718281828459045, -1.0))])
    assert await pooling.score([request]) == pytest.approx([0.6])
    assert await verifier.score([ScoreRequest((1, SEP), "q", ("s",), scope)]) == pytest.approx(
        [0.6]
    )  # the last token's
    assert await verifier.score([request]) == pytest.approx([0.5])
    assert transport.calls == [
        ("label", [1, 2, 0], scope), ("pool", [1, 2, SEP, 3], scope), ("pool", [1, SEP], scope), ("pool", [1, 2], scope)
    ]  # fmt: skip


@pytest.mark.asyncio
async def test_an_async_function_is_a_prm():
    async def shortest_first(requests):
        return [1.0 / (1 + len(r.steps[-1])) for r in requests]

    prm = as_prm(shortest_first)
    assert await prm.score([ScoreRequest((), "q", ("abc",))]) == [0.25]
    results = await solve_many(
        ["What is 1 + 1?"],
        SearchConfig(method="rebase", width=2, max_depth=2),
        policy=FakePolicy(),
        prm=shortest_first,
        embedder=FakeEmbedder(),
    )
    assert results[0].error is None and results[0].metrics.prm_calls > 0
    with pytest.raises(TypeError, match="async def score"):
        as_prm(lambda requests: [0.5])


def test_two_engines_on_one_gpu_must_fit_before_either_starts(monkeypatch):
    import torch
    from ets_async import load_backends
    from ets_async.errors import ConfigError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(ConfigError, match="lower gpu_memory_utilization to at most 0.70"):
        load_backends(EngineConfig(prm="qwen_prm", prm_model="/nowhere"))  # 0.85 + 0.25
    with pytest.raises(ConfigError, match="needs prm_model"):
        load_backends(EngineConfig(prm="qwen_prm"))
    with pytest.raises(ConfigError, match="leave prm_model unset"):
        load_backends(EngineConfig(prm="judge", prm_model="/nowhere"))


def test_the_prm_engine_gets_the_prm_share():
    config = EngineConfig(
        gpu_memory_utilization=0.6,
        num_kv_blocks=500,
        prm_gpu_memory_utilization=0.3,
        prm_cpu_kv_cache_gib=3,
        prm_devices="1",
    )
    prm = config.prm_engine()
    assert (prm.gpu_memory_utilization, prm.cpu_kv_cache_gib, prm.devices, prm.num_kv_blocks) == (0.3, 3, "1", None)
    assert prm.max_model_len == config.max_model_len


def test_an_engine_sees_its_configured_devices_only_while_it_starts(monkeypatch):
    import os

    from ets_async.backends.vllm_engine import _engine_environment

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with _engine_environment(EngineConfig(devices="1"), on_cpu=False):
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"
    with _engine_environment(EngineConfig(), on_cpu=False):
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"
