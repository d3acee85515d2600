"""Every PRM kind, written once: a prompt builder and a read-out over a ``ScoringTransport``, which
the in-process engine (``vllm_engine.EngineTransport``) and the HTTP fleet (``fleet.HttpTransport``)
both implement. ``PRM_KINDS`` is the one registry; ``backends.load_backends`` is its one loader.

- ``judge``: the policy model asked whether the newest step is correct; P(" Yes") against P(" No")
  after the policy's own token ids (so it shares the policy's prefix cache).
- ``math_shepherd``: a step-tag PRM on a causal LM: the question and the steps, each ending in the tag
  ``ки``; P("+") against P("-") at the newest tag, read through the model's LM head.
- ``qwen_prm``: a Qwen2.5-Math-PRM style token classifier on a pooling engine: chat-formatted, every
  step ending in ``<extra_0>``; P(correct) at the newest separator.
- ``verifier``: a value head learned from the policy's own rollouts (``ets_async.verifier``), served in
  Qwen2.5-Math-PRM's layout over the policy's weights: the policy's own token ids, no separator;
  P(correct) at the newest step's last token. Each step costs only its new tokens (prefix cache).
- ``confidence`` / ``arithmetic``: no model (``confidence_prm.py``).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..answers import SHEPHERD_STEP_TAG
from .confidence_prm import ArithmeticCheckedPRM, ConfidencePRM
from .protocols import PRM, ScoreRequest, ScoringTransport

PromptIds = Callable[[ScoreRequest], list[int]]

DEFAULT_QUESTION = "\n\nIs the last step above correct? Answer Yes or No.\nAnswer:"
JUDGE_LABELS = (" Yes", " No")
"""The judge's positive and negative label (one token each)."""

SHEPHERD_LABELS = ("+", "-")
"""Math-Shepherd's positive and negative label at the step tag."""

QWEN_STEP_SEPARATOR = "<extra_0>"
QWEN_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


def single_token_id(tokenizer: Any, text: str) -> int:
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(f"PRM label {text!r} must be one token for this tokenizer, got {len(ids)} tokens")
    return int(ids[0])


def label_probability(logprobs: Mapping[int, float], positive: int, negative: int) -> float:
    """P(positive) / (P(positive) + P(negative)) from a token -> logprob map.

    A label missing from the map (a server that returns only the top-k logprobs) is bounded by the
    smallest logprob that was returned.
    """
    floor = min(logprobs.values())
    lp_pos = logprobs.get(positive, floor)
    lp_neg = logprobs.get(negative, floor)
    return 1.0 / (1.0 + math.exp(lp_neg - lp_pos))


def newest_step_reward(token_ids: Sequence[int], rows: Sequence[Sequence[float]], separator_id: int) -> float | None:
    """P(correct) at the last separator, from per-token 2-class probabilities that cover the last
    ``len(rows)`` tokens of ``token_ids`` (an engine that read the rest from its prefix cache returns
    rows for the tokens it computed only). None when no separator is among them."""
    if len(rows) > len(token_ids):
        raise ValueError(f"{len(rows)} rows of probabilities for {len(token_ids)} tokens")
    tail = token_ids[len(token_ids) - len(rows) :]
    rewards = [float(row[1]) for token, row in zip(tail, rows, strict=True) if token == separator_id]
    return rewards[-1] if rewards else None


# ---- prompt builders (token ids of one ScoreRequest) -------------------------------------------


def judge_prompt(tokenizer: Any, question: str = DEFAULT_QUESTION) -> PromptIds:
    """The judge's prompt: the policy's own token ids, then the question (shares the policy's prefix cache)."""
    suffix = list(tokenizer.encode(question, add_special_tokens=False))
    return lambda request: [*request.token_ids, *suffix]


def shepherd_text(problem: str, steps: Sequence[str]) -> str:
    """Math-Shepherd input: the question, then each step followed by the step tag."""
    return problem + " " + "".join(f"{s.strip()} {SHEPHERD_STEP_TAG}\n" for s in steps).rstrip("\n")


def shepherd_prompt(tokenizer: Any) -> PromptIds:
    """Math-Shepherd's prompt as token ids: the question and steps, each step ending in the tag."""
    return lambda request: list(tokenizer.encode(shepherd_text(request.problem, request.steps)))


def qwen_prm_text(tokenizer: Any, problem: str, steps: Sequence[str]) -> str:
    """Qwen2.5-Math-PRM input: chat-formatted, every step followed by ``<extra_0>``."""
    messages = [
        {"role": "system", "content": QWEN_SYSTEM},
        {"role": "user", "content": problem},
        {"role": "assistant", "content": "".join(s.strip() + QWEN_STEP_SEPARATOR for s in steps)},
    ]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)


def qwen_prm_prompt(tokenizer: Any) -> PromptIds:
    return lambda request: list(tokenizer.encode(qwen_prm_text(tokenizer, request.problem, request.steps)))


# ---- read-outs ---------------------------------------------------------------------------------


class LabelPRM:
    """P(positive label) against P(negative label) as the next token after ``prompt_ids(request)``:
    one 1-token request per step (the judge and step-tag PRMs)."""

    def __init__(self, transport: ScoringTransport, prompt_ids: PromptIds, positive: int, negative: int) -> None:
        self.transport = transport
        self.prompt_ids = prompt_ids
        self.positive = positive
        self.negative = negative

    async def score(self, requests: Sequence[ScoreRequest]) -> list[float | None]:
        """All requests at once; the engine batches them."""
        return list(await asyncio.gather(*(self._score_one(r) for r in requests)))

    async def _score_one(self, request: ScoreRequest) -> float:
        logprobs = await self.transport.label_logprobs(
            self.prompt_ids(request), (self.positive, self.negative), scope=request.scope
        )
        return label_probability(logprobs, self.positive, self.negative)


ReadOut = Callable[[Sequence[int], Sequence[Sequence[float]]], "float | None"]
"""P(correct) from the prompt's token ids and the per-token class probabilities the engine computed."""


def at_separator(separator_id: int) -> ReadOut:
    return lambda ids, rows: newest_step_reward(ids, rows, separator_id)


def at_last_token(ids: Sequence[int], rows: Sequence[Sequence[float]]) -> float | None:
    """P(class 1) at the last token (the engine always computes it, prefix cache or not)."""
    return float(rows[-1][1]) if rows else None


class PoolingPRM:
    """P(correct) from a token-classification (pooling) model, read where ``read_out`` says."""

    def __init__(self, transport: ScoringTransport, prompt_ids: PromptIds, read_out: ReadOut) -> None:
        self.transport = transport
        self.prompt_ids = prompt_ids
        self.read_out = read_out

    async def score(self, requests: Sequence[ScoreRequest]) -> list[float | None]:
        return list(await asyncio.gather(*(self._score_one(r) for r in requests)))

    async def _score_one(self, request: ScoreRequest) -> float | None:
        ids = self.prompt_ids(request)
        rows = await self.transport.pool(ids, scope=request.scope)
        return self.read_out(ids, rows)  # None: the child is dropped (SPEC §3.3)


ScoreFunction = Callable[[Sequence[ScoreRequest]], Awaitable[list[float | None]]]
PRMLike = PRM | ScoreFunction
"""A PRM object, or a user's ``async def score(requests) -> list[float | None]`` function."""


class CallablePRM:
    """A user's async score function as a PRM."""

    def __init__(self, score: ScoreFunction) -> None:
        self._score = score

    async def score(self, requests: Sequence[ScoreRequest]) -> list[float | None]:
        return await self._score(requests)


def as_prm(prm: PRMLike) -> PRM:
    """``prm`` itself when it has a ``score`` method, an async function wrapped as one, else a TypeError."""
    if isinstance(prm, PRM):
        return prm
    if asyncio.iscoroutinefunction(prm) or (callable(prm) and asyncio.iscoroutinefunction(type(prm).__call__)):
        return CallablePRM(prm)
    raise TypeError(
        "prm must be an object with 'async def score(requests)' or an async function of the requests, got "
        f"{type(prm).__name__}"
    )


def judge_prm(transport: ScoringTransport, tokenizer: Any, question: str = DEFAULT_QUESTION) -> LabelPRM:
    """The LM judge on the policy's own model (``transport`` reaches the policy's engine or servers)."""
    positive, negative = (single_token_id(tokenizer, label) for label in JUDGE_LABELS)
    return LabelPRM(transport, judge_prompt(tokenizer, question), positive, negative)


def math_shepherd_prm(transport: ScoringTransport, tokenizer: Any) -> LabelPRM:
    """A Math-Shepherd style step-tag PRM on a causal LM (a generate runner)."""
    positive, negative = (single_token_id(tokenizer, label) for label in SHEPHERD_LABELS)
    return LabelPRM(transport, shepherd_prompt(tokenizer), positive, negative)


def qwen_prm(transport: ScoringTransport, tokenizer: Any) -> PoolingPRM:
    """A Qwen2.5-Math-PRM style token classifier (a pooling runner)."""
    separator = int(tokenizer.convert_tokens_to_ids(QWEN_STEP_SEPARATOR))
    return PoolingPRM(transport, qwen_prm_prompt(tokenizer), at_separator(separator))


def verifier_prm(transport: ScoringTransport, _tokenizer: Any) -> PoolingPRM:
    """A verifier learned from the policy's rollouts: the policy's own ids, read at the last token."""
    return PoolingPRM(transport, lambda request: list(request.token_ids), at_last_token)


# ---- the registry ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PRMKind:
    """How to build one kind of PRM. ``model``: whose model it reads ("none", "policy": the policy's
    engine or servers, "own": a model of its own, ``prm_model``); ``runner``: the vLLM runner that
    model needs."""

    name: str
    model: Literal["none", "policy", "own"]
    build: Callable[[Any, Any], PRM]  # (transport, tokenizer): both None for model-free kinds
    runner: Literal["generate", "pooling"] = "generate"


PRM_KINDS: dict[str, PRMKind] = {
    "confidence": PRMKind("confidence", "none", lambda _transport, _tokenizer: ConfidencePRM()),
    "arithmetic": PRMKind("arithmetic", "none", lambda _transport, _tokenizer: ArithmeticCheckedPRM()),
    "judge": PRMKind("judge", "policy", judge_prm),
    "math_shepherd": PRMKind("math_shepherd", "own", math_shepherd_prm),
    "qwen_prm": PRMKind("qwen_prm", "own", qwen_prm, runner="pooling"),
    "verifier": PRMKind("verifier", "own", verifier_prm, runner="pooling"),
}
