"""Scorers that need no model call: the policy's own confidence in a step, read from the token
log-probabilities it returned with the step, and an exact check of the arithmetic the step states.

Both run on the CPU in microseconds, so on a machine where every engine call is expensive they score
each step for free (the LM judge costs one more engine request per step).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from ..arithmetic import check_arithmetic
from ..errors import BackendError
from .protocols import PRM, ScoreRequest

ConfidenceMeasure = Literal["mean", "lowest_window"]


def step_confidence(logprobs: Sequence[float], measure: ConfidenceMeasure = "lowest_window", window: int = 16) -> float:
    """The policy's confidence in a step, in [0, 1]: the geometric mean probability of its tokens
    (``mean``), or of its least confident run of ``window`` tokens (``lowest_window``, DeepConf's
    "lowest group confidence"). An empty step scores 1."""
    if not logprobs:
        return 1.0
    if measure == "mean" or len(logprobs) <= window:
        return math.exp(sum(logprobs) / len(logprobs))
    run = sum(logprobs[:window])
    lowest = run
    for i in range(window, len(logprobs)):
        run += logprobs[i] - logprobs[i - window]
        lowest = min(lowest, run)
    return math.exp(lowest / window)


class ConfidencePRM:
    """Scores each step by the policy's confidence in it (``step_confidence``); no engine call.

    The default, the least confident 16-token window, separated right from wrong trajectories best
    of the CPU scorers measured (bench/bench_scorers.py; docs/BENCHMARKS.md "Scorers").
    """

    needs_step_logprobs = True

    def __init__(self, measure: ConfidenceMeasure = "lowest_window", window: int = 16) -> None:
        self.measure: ConfidenceMeasure = measure
        self.window = window

    async def score(self, requests: Sequence[ScoreRequest]) -> list[float | None]:
        scores: list[float | None] = []
        for request in requests:
            if request.step_logprobs is None:
                raise BackendError("the confidence PRM needs token log-probabilities, and the policy returned none")
            scores.append(step_confidence(request.step_logprobs, self.measure, self.window))
        return scores


class ArithmeticCheckedPRM:
    """Another PRM's score, cut to ``penalty`` times itself for a step whose stated arithmetic is
    wrong (``arithmetic.check_arithmetic``). Without an inner PRM, a step scores 1 when its
    arithmetic checks out, 0.5 when it states none, and ``penalty`` when some of it is wrong."""

    def __init__(self, inner: PRM | None = None, penalty: float = 0.1) -> None:
        self.inner = inner
        self.penalty = penalty
        self.needs_step_logprobs = bool(getattr(inner, "needs_step_logprobs", False))

    async def score(self, requests: Sequence[ScoreRequest]) -> list[float | None]:
        checks = [check_arithmetic(r.steps[-1]) for r in requests]
        if self.inner is None:
            return [self.penalty if c.wrong else (1.0 if c.claims else 0.5) for c in checks]
        scores = await self.inner.score(requests)
        return [s if s is None or c.all_right else s * self.penalty for s, c in zip(scores, checks, strict=True)]
