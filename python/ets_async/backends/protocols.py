"""The three backend protocols the search loop talks to: one async method each."""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from ..types import Step


@dataclass(eq=False)
class ProblemScope:
    """The search a backend call belongs to. The loop sets ``current_scope`` per problem; a routing
    backend (backends/fleet) keys prefix affinity on it and counts the problem's endpoint moves here."""

    id: str
    endpoint_moves: int = 0


current_scope: ContextVar[ProblemScope | None] = ContextVar("ets_async_problem_scope", default=None)


@dataclass(frozen=True)
class Sampling:
    """How to sample one step."""

    max_tokens: int
    temperature: float
    top_p: float
    stop: str
    seed: int | None
    logprobs: bool = False  # also return each sampled token's log-probability (Step.logprobs)


@dataclass(frozen=True)
class Expansion:
    """The children of one node, and what the engine reported for the request."""

    steps: list[Step]
    prompt_tokens: int
    cached_tokens: int
    preemptions: int = 0  # times the engine took the request's KV cache back and recomputed it


@dataclass(frozen=True)
class ScoreRequest:
    """One partial trajectory for the PRM: token ids of prompt + all steps, and the step texts."""

    token_ids: tuple[int, ...]
    problem: str
    steps: tuple[str, ...]
    # Which search asked (PRM calls are batched across problems, so the context variable is lost).
    scope: ProblemScope | None = field(default=None, compare=False, repr=False)
    # The newest step's sampled-token log-probabilities, when the policy returned them.
    step_logprobs: tuple[float, ...] | None = field(default=None, compare=False, repr=False)


@runtime_checkable
class Policy(Protocol):
    """Proposes reasoning steps. ``render`` is pure; ``expand`` talks to an engine."""

    def render(self, problem: str, system_prompt: str | None, template: str) -> list[int]:
        """The root prompt's token ids (chat template applied once)."""
        ...

    async def expand(self, prompt_token_ids: Sequence[int], n: int, sampling: Sampling) -> Expansion:
        """Sample ``n`` next steps continuing ``prompt_token_ids``. Cancelling aborts the request."""
        ...


@runtime_checkable
class PRM(Protocol):
    """Process reward model: one score in [0, 1] for the newest step of each trajectory.

    A PRM that reads the policy's token log-probabilities (``ScoreRequest.step_logprobs``) says so
    with a class attribute ``needs_step_logprobs = True``; the search then asks the policy for them.
    """

    async def score(self, requests: Sequence[ScoreRequest]) -> list[float | None]:
        """Scores in request order; None drops that child (SPEC §3.3, quirk 7)."""
        ...


@runtime_checkable
class Embedder(Protocol):
    """Sentence embeddings of step texts (ETS clusters the newest step only)."""

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """A float32 array of shape (len(texts), dim)."""
        ...


@dataclass
class PrefillCount:
    """PRM requests a transport sent, their prompt tokens, and how many of those the engine read from
    its prefix cache instead of computing them."""

    requests: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0

    def add(self, prompt_tokens: int, cached_tokens: int) -> None:
        self.requests += 1
        self.prompt_tokens += prompt_tokens
        self.cached_tokens += cached_tokens

    @property
    def computed_tokens(self) -> int:
        """The prefill the engine did: prompt tokens not read from the cache."""
        return self.prompt_tokens - self.cached_tokens


@runtime_checkable
class ScoringTransport(Protocol):
    """What a model-backed PRM asks of wherever its model runs: the in-process engine
    (``vllm_engine.EngineTransport``) or servers (``fleet.HttpTransport``). ``scope`` is the problem
    that asks; a routing transport keeps a problem's requests on one server."""

    async def label_logprobs(
        self, token_ids: Sequence[int], label_ids: Sequence[int], *, scope: ProblemScope | None = None
    ) -> dict[int, float]:
        """Log-probabilities of ``label_ids`` (at least; a server may return only its top-k) as the
        next token after ``token_ids``."""
        ...

    async def pool(self, token_ids: Sequence[int], *, scope: ProblemScope | None = None) -> list[list[float]]:
        """Per-token class probabilities of a token-classification model, one row per token for the
        last ``len(rows)`` tokens of ``token_ids`` (all of them, or only those the engine computed
        after reading the rest from its prefix cache)."""
        ...
