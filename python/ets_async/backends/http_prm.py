"""PRMs on servers: the LM judge (and step-tag PRMs) read through ``/v1/completions`` log-probabilities,
and pooling PRMs (Qwen2.5-Math-PRM style token classification) through vLLM's ``/pooling``.

Each score request is routed by its problem's scope, so the judge prompt, which extends the
policy's own token ids, lands on the server that already caches that prefix.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .http_client import HttpClient
from .judge_prm import DEFAULT_QUESTION, JUDGE_LABELS, judge_probability, judge_prompt, single_token_id
from .protocols import ScoreRequest, current_scope
from .vllm_prm import QWEN_STEP_SEPARATOR, SHEPHERD_LABELS, qwen_prm_text, qwen_step_rewards, shepherd_prompt

if TYPE_CHECKING:
    from ..fleet import Router

TOKEN_ID_PREFIX = "token_id:"


def label_logprobs(top: Mapping[str, float], labels: Mapping[str, int]) -> dict[int, float]:
    """A completions ``top_logprobs`` entry as token id -> logprob.

    Keys are ``token_id:N`` when the request set ``return_tokens_as_token_ids`` (vLLM); other servers
    key by token text, which is matched against the label texts in ``labels`` (text -> id).
    """
    result: dict[int, float] = {}
    for key, logprob in top.items():
        if key.startswith(TOKEN_ID_PREFIX):
            result[int(key[len(TOKEN_ID_PREFIX) :])] = float(logprob)
        elif key in labels:
            result[labels[key]] = float(logprob)
    if not result:
        raise ValueError(f"no usable entry in top_logprobs {dict(top)!r}")
    return result


class HttpLogprobPRM:
    """P(positive) / (P(positive) + P(negative)) of the next token after ``prompt_ids(request)``, with
    the same request as the in-process ``LogprobPRM`` (1 greedy token restricted to the two labels,
    top-k log-probabilities), so both give the same scores."""

    def __init__(
        self,
        router: Router,
        tokenizer: Any,
        prompt_ids: Callable[[ScoreRequest], list[int]],
        *,
        positive: str,
        negative: str,
        top_logprobs: int = 20,
        model: str | None = None,
    ) -> None:
        self.router = router
        self.client: HttpClient = router.client
        self.prompt_ids = prompt_ids
        self.positive = single_token_id(tokenizer, positive)
        self.negative = single_token_id(tokenizer, negative)
        self.labels = {positive: self.positive, negative: self.negative}
        self.top_logprobs = top_logprobs
        self.model = model

    async def score(self, requests: Sequence[ScoreRequest]) -> list[float | None]:
        """All requests at once; each goes to its own problem's endpoint."""
        return list(await asyncio.gather(*(self._score_one(r) for r in requests)))

    async def _score_one(self, request: ScoreRequest) -> float:
        payload: dict[str, Any] = {
            "prompt": self.prompt_ids(request),
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": self.top_logprobs,
            "allowed_token_ids": [self.positive, self.negative],
            "return_tokens_as_token_ids": True,
            "stream": False,
        }
        if self.model is not None:
            payload["model"] = self.model

        async def send(url: str) -> dict[str, Any]:
            return await self.client.post_json(f"{url}/v1/completions", payload)

        data = await self.router.call(request.scope or current_scope.get(), send)
        top = data["choices"][0]["logprobs"]["top_logprobs"][0]
        return judge_probability(label_logprobs(top, self.labels), self.positive, self.negative)


def http_judge_prm(router: Router, tokenizer: Any, *, question: str = DEFAULT_QUESTION, model: str | None = None) -> HttpLogprobPRM:
    """The LM judge over the policy's own token ids, on the policy's fleet (same endpoint per problem)."""
    positive, negative = JUDGE_LABELS
    return HttpLogprobPRM(router, tokenizer, judge_prompt(tokenizer, question), positive=positive, negative=negative, model=model)


def http_math_shepherd_prm(router: Router, tokenizer: Any, *, model: str | None = None) -> HttpLogprobPRM:
    """A Math-Shepherd style step-tag PRM served by a generate-runner server."""
    positive, negative = SHEPHERD_LABELS
    return HttpLogprobPRM(router, tokenizer, shepherd_prompt(tokenizer), positive=positive, negative=negative, model=model)


class HttpPoolingPRM:
    """A Qwen2.5-Math-PRM style model on a vLLM pooling server (``--runner pooling``): ``POST /pooling``
    with ``task="token_classify"`` returns per-token class probabilities; the newest step's score is
    P(correct) at its ``<extra_0>`` separator."""

    def __init__(self, router: Router, tokenizer: Any, *, model: str | None = None) -> None:
        self.router = router
        self.client: HttpClient = router.client
        self.tokenizer = tokenizer
        self.model = model
        self.separator_id = int(tokenizer.convert_tokens_to_ids(QWEN_STEP_SEPARATOR))

    async def score(self, requests: Sequence[ScoreRequest]) -> list[float | None]:
        return list(await asyncio.gather(*(self._score_one(r) for r in requests)))

    async def _score_one(self, request: ScoreRequest) -> float | None:
        ids = list(self.tokenizer.encode(qwen_prm_text(self.tokenizer, request.problem, request.steps)))
        payload: dict[str, Any] = {"input": ids, "task": "token_classify"}
        if self.model is not None:
            payload["model"] = self.model

        async def send(url: str) -> dict[str, Any]:
            return await self.client.post_json(f"{url}/pooling", payload)

        data = await self.router.call(request.scope or current_scope.get(), send)
        rewards = qwen_step_rewards(ids, data["data"][0]["data"], self.separator_id)
        return rewards[-1] if rewards else None  # no separator scored: the child is dropped (ets_spec §3.3)
