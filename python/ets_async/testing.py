"""Scripted backends: fast, deterministic stand-ins for the engine, for tests and dry runs.

They exercise the whole pipeline (search loop, batching, grading, run files, CLI) without a model:

    from ets_async.testing import fake_backends
    backends = fake_backends()
    results = await solve_many(problems, config, policy=backends.policy, prm=backends.prm,
                               embedder=backends.embedder)

``ets-async run --backend fake`` uses them too. Their answers are arithmetic noise (40, 41 or 42),
so accuracy figures from a fake run mean nothing; token counts, KV figures and resumption are real.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
from collections.abc import Sequence

import numpy as np

from .backends import Backends, Expansion, Sampling, ScoreRequest
from .types import Step

__all__ = ["FakeEmbedder", "FakePRM", "FakePolicy", "fake_backends"]


def _unit(text: str) -> float:
    """A deterministic pseudo-random number in [0, 1) derived from ``text``."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=4).digest(), "little") / 2**32


class FakePolicy:
    """Byte-level 'tokenizer'; each step is a short arithmetic line; depth >= ``answer_depth`` answers.

    Counts requests and tracks those in flight; with ``record`` it also keeps every request's prompt
    (``prompts``) so tests can check token-id extension (a memory cost per request: long runs leave
    it off). ``delay_s`` makes every expansion take that long (a slow engine); ``fail_on`` makes
    expansions of prompts containing that string raise (an engine failure); ``crash_on`` makes them
    end this whole process at once (a crash that takes the engine's host down).
    """

    def __init__(
        self,
        *,
        answer_depth: int = 3,
        delay_s: float = 0.0,
        fail_on: str | None = None,
        crash_on: str | None = None,
        record: bool = True,
    ) -> None:
        self.answer_depth = answer_depth
        self.delay_s = delay_s
        self.fail_on = fail_on
        self.crash_on = crash_on
        self.record = record
        self.prompts: list[tuple[int, ...]] = []
        self.samplings: list[Sampling] = []
        self.requests = 0
        self.in_flight = 0
        self.cancelled = 0

    def render(self, problem: str, system_prompt: str | None, template: str) -> list[int]:
        return list(f"{system_prompt or ''}|{template.format(problem=problem)}|".encode())

    async def expand(self, prompt_token_ids: Sequence[int], n: int, sampling: Sampling) -> Expansion:
        self.requests += 1
        if self.record:
            self.prompts.append(tuple(prompt_token_ids))
            self.samplings.append(sampling)
        prompt = bytes(prompt_token_ids).decode()
        if self.fail_on is not None and self.fail_on in prompt:
            raise RuntimeError(f"engine failure on {self.fail_on!r}")
        if self.crash_on is not None and self.crash_on in prompt:
            os._exit(70)  # no cleanup, no exception: as if the process was killed
        self.in_flight += 1
        try:
            await asyncio.sleep(self.delay_s)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1
        rng = random.Random(sampling.seed)
        depth = prompt.count(sampling.stop)
        steps = []
        for _ in range(n):
            a, b = rng.randint(1, 9), rng.randint(1, 3)
            if depth + 1 >= self.answer_depth and rng.random() < 0.7:
                text = f"The answer is: {a % 3 + 40}{sampling.stop}"
            else:
                text = f"{a} + {b} = {a + b}{sampling.stop}"
            ids = tuple(text.encode()[: sampling.max_tokens])
            logprobs = tuple(-rng.random() for _ in ids) if sampling.logprobs else None
            steps.append(Step(ids, bytes(ids).decode(), finished=False, logprobs=logprobs))
        return Expansion(steps, prompt_tokens=len(prompt_token_ids), cached_tokens=max(0, len(prompt_token_ids) - 8))


class FakePRM:
    """Deterministic pseudo-scores of the newest step; with ``record``, keeps every batch's size.

    ``drop``: steps containing this string get no score (None), which drops them; ``delay_s``: every
    call takes that long (a slow PRM).
    """

    def __init__(self, *, drop: str | None = None, delay_s: float = 0.0, record: bool = True) -> None:
        self.batches: list[int] = []
        self.drop = drop
        self.delay_s = delay_s
        self.record = record

    async def score(self, requests: Sequence[ScoreRequest]) -> list[float | None]:
        if self.record:
            self.batches.append(len(requests))
        await asyncio.sleep(self.delay_s)
        return [
            None if self.drop is not None and self.drop in r.steps[-1] else _unit("/".join(r.steps)) for r in requests
        ]


class FakeEmbedder:
    """Equal texts get equal vectors; a few texts share a direction so clusters form. With ``record``
    it keeps every text it embedded (``texts``); with ``delay_s`` every call takes that long."""

    def __init__(self, dim: int = 8, *, delay_s: float = 0.0, record: bool = True) -> None:
        self.dim = dim
        self.delay_s = delay_s
        self.record = record
        self.calls = 0
        self.texts: list[str] = []
        self._vectors: dict[str, np.ndarray] = {}  # a generator per text costs more than the search

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        if self.record:
            self.texts.extend(texts)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return np.asarray([self._vector(text.split("=")[0]) for text in texts], dtype=np.float32)

    def _vector(self, key: str) -> np.ndarray:
        if key not in self._vectors:
            self._vectors[key] = np.random.default_rng(int(_unit(key) * 2**31)).normal(size=self.dim)
        return self._vectors[key]


def fake_backends(*, delay_s: float = 0.0, answer_depth: int = 3, crash_on: str | None = None) -> Backends:
    """A scripted policy, PRM and embedder bundled like ``load_backends`` returns them; they keep no
    record of their requests, so their memory stays flat over any number of problems."""
    policy = FakePolicy(answer_depth=answer_depth, delay_s=delay_s, crash_on=crash_on, record=False)
    return Backends(policy, FakePRM(record=False), FakeEmbedder(record=False))
