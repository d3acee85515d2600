"""The PRM transport on servers (``protocols.ScoringTransport``): label log-probabilities through
``/v1/completions`` and token classification through vLLM's ``/pooling``, each request routed by
its problem's scope so the judge's prompt, which extends the policy's own token ids, lands on the
server that already caches that prefix.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from ...errors import BackendError
from ..protocols import PrefillCount, ProblemScope, current_scope
from .policy import LazyTokenizer, cached_prompt_tokens
from .router import Router

TOKEN_ID_PREFIX = "token_id:"

POOL_EVERY_TOKEN = ("--pooler-config", '{"tok_pooling_type": "ALL"}')
"""The ``vllm serve`` flag a pooling PRM server needs: a row for every token, wherever its step tags are."""


def top_logprobs_by_id(top: Mapping[str, float], labels: Mapping[str, int]) -> dict[int, float]:
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


class HttpTransport:
    """PRM requests on a fleet. ``label_logprobs`` asks for one greedy token restricted to the labels
    with the top-k log-probabilities (the same request as the in-process engine's, so both give the
    same scores); ``pool`` posts the token ids to ``/pooling`` with ``task="token_classify"`` and needs a
    row for every token (``POOL_EVERY_TOKEN``): vLLM's HTTP API cannot ask the server to read the
    prefix cache for token pooling, so each call prefills the whole trajectory."""

    def __init__(
        self, router: Router, tokenizer: LazyTokenizer, *, model: str | None = None, top_logprobs: int = 20
    ) -> None:
        self.router = router
        self.tokenizer = tokenizer
        self.model = model
        self.top_logprobs = top_logprobs
        self.prefill = PrefillCount()

    async def _post(self, path: str, payload: dict[str, Any], scope: ProblemScope | None) -> dict[str, Any]:
        if self.model is not None:
            payload["model"] = self.model
        return await self.router.post(scope or current_scope.get(), path, payload)

    async def label_logprobs(
        self, token_ids: Sequence[int], label_ids: Sequence[int], *, scope: ProblemScope | None = None
    ) -> dict[int, float]:
        payload: dict[str, Any] = {
            "prompt": list(token_ids),
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": self.top_logprobs,
            "allowed_token_ids": list(label_ids),
            "return_tokens_as_token_ids": True,
            "stream": False,
        }
        data = await self._post("/v1/completions", payload, scope)
        self.prefill.add(len(token_ids), cached_prompt_tokens(data))
        top = data["choices"][0]["logprobs"]["top_logprobs"][0]
        return top_logprobs_by_id(top, {self.tokenizer.get().decode([label]): label for label in label_ids})

    async def pool(self, token_ids: Sequence[int], *, scope: ProblemScope | None = None) -> list[list[float]]:
        data = await self._post("/pooling", {"input": list(token_ids), "task": "token_classify"}, scope)
        self.prefill.add(len(token_ids), 0)
        rows = [list(row) for row in data["data"][0]["data"]]
        if len(rows) != len(token_ids):
            raise BackendError(
                f"the pooling server returned {len(rows)} rows for {len(token_ids)} tokens: it pools at step tags "
                "only (vLLM's default for process reward models, with Qwen's tag id 151651). Serve the PRM with "
                f"{shlex.join(POOL_EVERY_TOKEN)} so that every token's row comes back"
            )
        return rows
