"""Trained PRMs on vLLM: Qwen2.5-Math-PRM style token classification on a pooling engine, and
Math-Shepherd style step tags read as P(+) against P(-) through the model's LM head.

The prompt formats and the score read-out are pure functions, unit-tested without a GPU.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .judge_prm import LogprobPRM
from .protocols import ScoreRequest
from .vllm_engine import final_output, next_request_id

if TYPE_CHECKING:
    from vllm.v1.engine.async_llm import AsyncLLM

QWEN_STEP_SEPARATOR = "<extra_0>"
QWEN_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
SHEPHERD_TAG = "ки"


def qwen_prm_text(tokenizer: Any, problem: str, steps: Sequence[str]) -> str:
    """Qwen2.5-Math-PRM input: chat-formatted, every step followed by ``<extra_0>``."""
    messages = [
        {"role": "system", "content": QWEN_SYSTEM},
        {"role": "user", "content": problem},
        {"role": "assistant", "content": "".join(s.strip() + QWEN_STEP_SEPARATOR for s in steps)},
    ]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)


def qwen_step_rewards(token_ids: Sequence[int], probabilities: Sequence[Sequence[float]], separator_id: int) -> list[float]:
    """P(correct) at every separator position, from per-token 2-class probabilities."""
    if len(token_ids) != len(probabilities):
        raise ValueError(f"{len(token_ids)} tokens but {len(probabilities)} rows of probabilities")
    return [float(row[1]) for tok, row in zip(token_ids, probabilities) if tok == separator_id]


def shepherd_text(problem: str, steps: Sequence[str]) -> str:
    """Math-Shepherd input: the question, then each step followed by the step tag."""
    return problem + " " + "".join(f"{s.strip()} {SHEPHERD_TAG}\n" for s in steps).rstrip("\n")


SHEPHERD_LABELS = ("+", "-")
"""Math-Shepherd's positive and negative label at the step tag."""


def shepherd_prompt(tokenizer: Any) -> Callable[[ScoreRequest], list[int]]:
    """Math-Shepherd's prompt as token ids: the question and steps, each step ending in the tag."""
    return lambda request: list(tokenizer.encode(shepherd_text(request.problem, request.steps)))


def math_shepherd_prm(engine: AsyncLLM, tokenizer: Any, *, request_timeout_s: float | None = None) -> LogprobPRM:
    """P(+) / (P(+) + P(-)) for the token after the newest step's tag."""
    positive, negative = SHEPHERD_LABELS
    return LogprobPRM(
        engine, tokenizer, shepherd_prompt(tokenizer), positive=positive, negative=negative, request_timeout_s=request_timeout_s
    )


class QwenPRM:
    """A pooling engine (``runner="pooling"``) serving a Qwen2.5-Math-PRM style model."""

    def __init__(self, engine: AsyncLLM, tokenizer: Any, *, request_timeout_s: float | None = None) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.request_timeout_s = request_timeout_s
        self.separator_id = int(tokenizer.convert_tokens_to_ids(QWEN_STEP_SEPARATOR))

    async def score(self, requests: Sequence[ScoreRequest]) -> list[float | None]:
        return list(await asyncio.gather(*(self._score_one(r) for r in requests)))

    async def _score_one(self, request: ScoreRequest) -> float | None:
        from vllm.pooling_params import PoolingParams

        ids = self.tokenizer.encode(qwen_prm_text(self.tokenizer, request.problem, request.steps))
        request_id = next_request_id("qwen-prm")
        stream = self.engine.encode({"prompt_token_ids": ids}, PoolingParams(task="token_classify"), request_id)
        final = await final_output(self.engine, stream, request_id, timeout_s=self.request_timeout_s)
        rewards = qwen_step_rewards(ids, final.outputs.data.tolist(), self.separator_id)
        return rewards[-1] if rewards else None  # no separator scored: the child is dropped (ets_spec §3.3)
