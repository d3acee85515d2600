"""Policy on an in-process vLLM engine: children extend the parent's token ids exactly."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..types import Step
from .protocols import Expansion, Sampling

if TYPE_CHECKING:
    from vllm import SamplingParams

    from .vllm_engine import InProcessEngine


def render_chat(tokenizer: Any, problem: str, system_prompt: str | None, template: str) -> list[int]:
    """Root prompt token ids: the chat template applied once (plain text for base models)."""
    user = template.format(problem=problem)
    if getattr(tokenizer, "chat_template", None):
        messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
            {"role": "user", "content": user}
        ]
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return list(tokenizer.encode(text, add_special_tokens=False))
    text = f"{system_prompt}\n\n{user}\n" if system_prompt else f"{user}\n"
    return list(tokenizer.encode(text))


class VllmPolicy:
    """One engine request per expanded node, ``n`` = its number of children (siblings share the prefix).
    A request still running after ``request_timeout_s`` is aborted (RequestTimeoutError)."""

    def __init__(
        self,
        engine: InProcessEngine,
        tokenizer: Any,
        *,
        temperature: float | None = None,
        request_timeout_s: float | None = None,
    ) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.temperature = temperature  # measured for this model; used when a SearchConfig leaves it unset
        self.request_timeout_s = request_timeout_s
        self.max_model_len: int | None = engine.llm.model_config.max_model_len
        self.eos_token_id = tokenizer.eos_token_id

    def _step(self, output: Any) -> Step:
        """finish_reason "stop" with no stop_reason is end-of-sequence: the trajectory ends there.
        Its token ids end with the EOS id, which is not part of the solution text: drop it."""
        ids = tuple(output.token_ids)
        logprobs = None
        if output.logprobs is not None:
            logprobs = tuple(
                float(position[token].logprob) for token, position in zip(ids, output.logprobs, strict=True)
            )
        ended = output.finish_reason == "stop" and output.stop_reason is None
        if ended and ids and ids[-1] == self.eos_token_id:
            ids = ids[:-1]
            logprobs = logprobs[: len(ids)] if logprobs is not None else None
        return Step(ids, output.text, finished=ended, logprobs=logprobs)

    def render(self, problem: str, system_prompt: str | None, template: str) -> list[int]:
        return render_chat(self.tokenizer, problem, system_prompt, template)

    def sampling_params(self, prompt_token_ids: Sequence[int], n: int, sampling: Sampling) -> SamplingParams:
        """The engine's parameters for one expansion."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        return SamplingParams(
            n=n,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_tokens,
            stop=[sampling.stop],
            include_stop_str_in_output=True,
            seed=sampling.seed,
            logprobs=0 if sampling.logprobs else None,  # 0: only the sampled token's
            output_kind=RequestOutputKind.FINAL_ONLY,
        )

    async def expand(self, prompt_token_ids: Sequence[int], n: int, sampling: Sampling) -> Expansion:
        params = self.sampling_params(prompt_token_ids, n, sampling)
        output, preemptions = await self.engine.generate(
            prompt_token_ids, params, tag="policy", timeout_s=self.request_timeout_s
        )
        steps = [self._step(o) for o in output.outputs]
        return Expansion(
            steps,
            prompt_tokens=len(prompt_token_ids),
            cached_tokens=output.num_cached_tokens or 0,
            preemptions=preemptions,
        )
