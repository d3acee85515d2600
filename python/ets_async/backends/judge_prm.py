"""LM-judge PRM: asks any causal LM whether the newest step is correct and reads P(yes) against
P(no) from its next-token log-probabilities. The CPU default; it may share the policy engine, in
which case the judge prompt extends the policy's own token ids and hits its prefix cache."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import BackendError
from .protocols import ScoreRequest
from .vllm_engine import run_request

if TYPE_CHECKING:
    from vllm.v1.engine.async_llm import AsyncLLM

DEFAULT_QUESTION = "\n\nIs the last step above correct? Answer Yes or No.\nAnswer:"


def single_token_id(tokenizer: Any, text: str) -> int:
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(f"judge label {text!r} must be one token for this tokenizer, got {len(ids)} tokens")
    return int(ids[0])


def judge_probability(logprobs: Mapping[int, float], positive: int, negative: int) -> float:
    """P(positive) / (P(positive) + P(negative)) from a token -> logprob map.

    A label missing from the map (an engine that returns only top-k logprobs) is bounded by the
    smallest logprob that was returned.
    """
    floor = min(logprobs.values())
    lp_pos = logprobs.get(positive, floor)
    lp_neg = logprobs.get(negative, floor)
    return 1.0 / (1.0 + math.exp(lp_neg - lp_pos))


class LogprobPRM:
    """Scores the newest step as P(positive label) at the end of a prompt built by ``prompt_ids``.

    Covers the LM judge (``JudgePRM``) and step-tag PRMs read through their LM head
    (``vllm_prm.math_shepherd_prm``): both are one 1-token request with the label logprobs.
    """

    def __init__(
        self,
        engine: AsyncLLM,
        tokenizer: Any,
        prompt_ids: Callable[[ScoreRequest], list[int]],
        *,
        positive: str,
        negative: str,
        request_timeout_s: float | None = None,
    ) -> None:
        self.engine = engine
        self.request_timeout_s = request_timeout_s
        self.prompt_ids = prompt_ids
        self.positive = single_token_id(tokenizer, positive)
        self.negative = single_token_id(tokenizer, negative)

    async def score(self, requests: Sequence[ScoreRequest]) -> list[float | None]:
        """All requests go to the engine at once; it batches them."""
        return list(await asyncio.gather(*(self._score_one(r) for r in requests)))

    async def _score_one(self, request: ScoreRequest) -> float:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        params = SamplingParams(
            max_tokens=1,
            temperature=0.0,
            logprob_token_ids=[self.positive, self.negative],  # always returned, whatever their rank
            output_kind=RequestOutputKind.FINAL_ONLY,
        )
        output, _ = await run_request(
            self.engine, self.prompt_ids(request), params, tag="prm", timeout_s=self.request_timeout_s
        )
        logprobs = output.outputs[0].logprobs
        if not logprobs:
            raise BackendError("the engine returned no log-probabilities for the judge's labels")
        return judge_probability({t: lp.logprob for t, lp in logprobs[0].items()}, self.positive, self.negative)


JUDGE_LABELS = (" Yes", " No")
"""The judge's positive and negative label (one token each)."""


def judge_prompt(tokenizer: Any, question: str = DEFAULT_QUESTION) -> Callable[[ScoreRequest], list[int]]:
    """The judge's prompt: the policy's own token ids, then the question (shares the policy's prefix cache)."""
    suffix = list(tokenizer.encode(question, add_special_tokens=False))
    return lambda request: [*request.token_ids, *suffix]


def judge_prm(
    engine: AsyncLLM, tokenizer: Any, *, question: str = DEFAULT_QUESTION, request_timeout_s: float | None = None
) -> LogprobPRM:
    """The LM judge on the policy's engine."""
    positive, negative = JUDGE_LABELS
    return LogprobPRM(
        engine,
        tokenizer,
        judge_prompt(tokenizer, question),
        positive=positive,
        negative=negative,
        request_timeout_s=request_timeout_s,
    )
