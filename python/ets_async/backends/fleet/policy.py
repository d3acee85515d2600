"""Policy on a fleet of OpenAI-compatible servers (vLLM, SGLang): token-id prompts over
``/v1/completions``, each problem pinned to one server (``router.Router``) so its tree stays in that
server's prefix cache; children extend the parent's token ids exactly as the server returned them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ...types import Step
from ..protocols import Expansion, Sampling, current_scope
from ..vllm_policy import render_chat
from .client import HttpClient
from .router import Router

log = logging.getLogger("ets_async")


class LazyTokenizer:
    """A Hugging Face tokenizer loaded from a local directory on first use (no network)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._tokenizer: Any = None

    def get(self) -> Any:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        return self._tokenizer


def completion_payload(
    prompt_token_ids: Sequence[int], n: int, sampling: Sampling, model: str | None
) -> dict[str, Any]:
    """The ``/v1/completions`` body of one expansion: stop at the step delimiter and keep it, return
    the generated token ids (vLLM's ``return_token_ids``), per-request seed."""
    payload: dict[str, Any] = {
        "prompt": list(prompt_token_ids),
        "n": n,
        "max_tokens": sampling.max_tokens,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "stop": [sampling.stop],
        "include_stop_str_in_output": True,
        "return_token_ids": True,
        "stream": False,
    }
    if sampling.seed is not None:
        payload["seed"] = sampling.seed
    if sampling.logprobs:
        payload["logprobs"] = 0  # the sampled tokens' own log-probabilities only
    if model is not None:
        payload["model"] = model
    return payload


def cached_prompt_tokens(data: dict[str, Any]) -> int:
    """``usage.prompt_tokens_details.cached_tokens``; 0 when the server does not report it (vLLM
    reports it only with ``--enable-prompt-tokens-details``)."""
    details = (data.get("usage") or {}).get("prompt_tokens_details") or {}
    return int(details.get("cached_tokens") or 0)


def parse_completion(
    data: dict[str, Any], prompt_tokens: int, encode: Callable[[str], list[int]] | None = None
) -> Expansion:
    """Steps from a completions response, in choice order.

    A step ends its trajectory when generation stopped on something other than the step delimiter
    (the end-of-sequence token: vLLM reports ``stop_reason`` None or a stop token id, SGLang a
    ``matched_stop`` token id). Servers that do not return token ids (SGLang's OpenAI API) fall back to
    ``encode(text)``, which can differ from what the server generated.
    """
    steps = []
    for choice in sorted(data["choices"], key=lambda c: c.get("index", 0)):
        text = choice.get("text") or ""
        token_ids = choice.get("token_ids")
        if token_ids is None:
            if encode is None:
                raise ValueError("the server returned no token_ids; it needs return_token_ids (vLLM >= 0.10)")
            token_ids = encode(text)
        stop = choice.get("stop_reason", choice.get("matched_stop"))
        finished = choice.get("finish_reason") == "stop" and not isinstance(stop, str)
        token_logprobs = (choice.get("logprobs") or {}).get("token_logprobs")
        logprobs = None if token_logprobs is None else tuple(float(lp or 0.0) for lp in token_logprobs)
        steps.append(Step(tuple(int(t) for t in token_ids), text, finished=finished, logprobs=logprobs))
    usage = data.get("usage") or {}
    return Expansion(
        steps, prompt_tokens=int(usage.get("prompt_tokens") or prompt_tokens), cached_tokens=cached_prompt_tokens(data)
    )


class HttpPolicy:
    """One completions request per expanded node, ``n`` = its number of children, routed by the
    calling problem's scope (``current_scope``, set by the search loop)."""

    def __init__(
        self,
        router: Router,
        tokenizer: LazyTokenizer,
        *,
        model: str | None = None,
        max_model_len: int | None = None,
    ) -> None:
        self.router = router
        self.client: HttpClient = router.client
        self._tokenizer = tokenizer
        self.model = model
        self.max_model_len = max_model_len
        self._warned_no_token_ids = False

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer.get()

    def render(self, problem: str, system_prompt: str | None, template: str) -> list[int]:
        return render_chat(self.tokenizer, problem, system_prompt, template)

    async def expand(self, prompt_token_ids: Sequence[int], n: int, sampling: Sampling) -> Expansion:
        payload = completion_payload(prompt_token_ids, n, sampling, self.model)
        data = await self.router.post(current_scope.get(), "/v1/completions", payload)
        return parse_completion(data, len(prompt_token_ids), self._encode_fallback)

    def _encode_fallback(self, text: str) -> list[int]:
        if not self._warned_no_token_ids:
            log.warning("the server returned no token ids; children are re-tokenised text (prefix hits may drop)")
            self._warned_no_token_ids = True
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    async def aclose(self) -> None:
        """Stop health checks and close the pooled connections (of the running loop)."""
        await self.router.aclose()
        await self.client.aclose()
