"""The names a user chooses from, declared once as data: the search methods (with each method's own
settings) and the PRM kinds. A leaf module: it imports no search or backend code, so ``config.py``
declares ``SearchConfig`` statically from it (mypy sees every field) and the CLI derives its choices
from it. ``search.METHODS`` and ``backends.prm_kinds.PRM_KINDS`` register the implementations under
these names; ``tests/test_registry.py`` checks that they agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from typing import Self


class MethodSettings(BaseModel):
    """A group of SearchConfig fields: a method's own, or the stop rule's (``StopSettings``).
    SearchConfig inherits every group, so they are set flat like the shared ones
    (``SearchConfig(lambda_s=0)``, ``--set lambda_s=0``, recipes) and validated with them."""

    @classmethod
    def of(cls, config: Any) -> Self:
        """These settings as ``config`` has them (already validated there)."""
        return cls.model_validate({name: getattr(config, name) for name in cls.model_fields})

    def describe(self) -> str:
        """``key=value`` pairs for logs; ``default`` where a setting is left to the method."""
        return " ".join(f"{k}={'default' if v is None else format(v, 'g') if isinstance(v, float) else v}"
                        for k, v in self)  # fmt: skip


class EtsSettings(MethodSettings):
    lambda_b: float = Field(1.0, ge=0.0, description="ETS weight of the KV (node) cost")
    lambda_s: float | None = Field(
        None, ge=0.0, description="ETS weight of semantic coverage; None = the paper's value for this width"
    )
    cluster_threshold: float | None = Field(
        None,
        ge=0.0,
        le=2.0,
        description="ETS cosine distance cut for step clusters; None = the embedder's calibrated cut "
        "(ets-async calibrate), or the paper's 0.05 for an embedder without one",
    )
    kv_cost: Literal["nodes", "tokens"] = Field("nodes", description="ETS cost per kept node, or per kept token")


class BeamSettings(MethodSettings):
    beam_keep: int | None = Field(
        None, ge=1, description="beams kept per step; None = ceil(sqrt(B)) of the budget left"
    )


class DvtsSettings(MethodSettings):
    dvts_subtrees: int | None = Field(None, ge=1, description="DVTS subtrees; None = ceil(sqrt(W))")


class ParticleFilterSettings(MethodSettings):
    pf_temperature: float = Field(1.0, gt=0.0, description="particle filtering: weights are softmax(logit(score) / T)")


class StopSettings(MethodSettings):
    """When a search may stop before its budget is spent: once its answer is settled (``stopping.py``,
    SPEC §3.4). Off by default: every search spends its whole width."""

    stop_when: Literal["budget", "supermajority", "posterior"] = Field(
        "budget",
        description="budget: spend the whole width; supermajority: stop once one answer holds stop_share of the "
        "finished trajectories' votes; posterior: stop once the leading answer beats the runner-up with "
        "posterior probability stop_confidence. Votes are weighted as answer_selection weighs them",
    )
    stop_share: float = Field(
        0.75, gt=0.5, le=1.0, description="supermajority: the leading answer's share of the votes"
    )
    stop_confidence: float = Field(
        0.95,
        gt=0.5,
        lt=1.0,
        description="posterior: P(leader's share > runner-up's) under Beta(lead + 1, runner-up + 1)",
    )
    stop_min_finished: int = Field(4, ge=1, description="finished trajectories with an answer before any stop")
    wave_size: int | None = Field(
        None, ge=1, description="best_of_n with a stop rule: samples per wave from the root; None = stop_min_finished"
    )


@dataclass(frozen=True)
class Choice:
    """One name a user may choose, what it is, and (methods) its own settings."""

    name: str
    summary: str
    settings: type[MethodSettings] | None = None


METHOD_CHOICES: tuple[Choice, ...] = (
    Choice("ets", "ETS: an integer program keeps the candidates worth their KV cost and coverage", EtsSettings),
    Choice("rebase", "REBASE: children in proportion to softmax(score / T)"),
    Choice("beam", "beam search: the top-k candidates share the budget", BeamSettings),
    Choice("dvts", "DVTS: independent subtrees, a greedy beam in each", DvtsSettings),
    Choice("best_of_n", "best-of-N: independent samples, no pruning"),
    Choice(
        "particle_filter",
        "particle filtering: the budget resampled in proportion to the scores",
        ParticleFilterSettings,
    ),
)
PRM_CHOICES: tuple[Choice, ...] = (
    Choice("confidence", "the policy's own token probabilities (no extra call)"),
    Choice("arithmetic", "exact checks of the step's stated arithmetic (no model)"),
    Choice("judge", "the policy model asked whether the step is correct (one engine call per step)"),
    Choice("math_shepherd", "a trained Math-Shepherd style step-tag PRM (prm_model)"),
    Choice("qwen_prm", "a trained Qwen2.5-Math-PRM style token classifier (prm_model)"),
    Choice("verifier", "a value head learned from the policy's own rollouts (prm_model: a head file; None = the "
           "policy's registered one)"),
)
METHOD_NAMES = tuple(c.name for c in METHOD_CHOICES)
PRM_NAMES = tuple(c.name for c in PRM_CHOICES)


def method_settings(method: str) -> type[MethodSettings] | None:
    """The own settings of a method name (None for a method without any)."""
    return next(c.settings for c in METHOD_CHOICES if c.name == method)


def check_choice(kind: str, value: str, names: tuple[str, ...]) -> str:
    """``value`` if it is one of ``names``, else a ValueError that lists them."""
    if value not in names:
        raise ValueError(f"unknown {kind} {value!r}; {kind}s: {', '.join(names)}")
    return value
