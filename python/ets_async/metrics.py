"""Per-problem counters: tokens, calls, KV size per selection step, cache hits, time."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass
class SearchMetrics:
    """Counters of one problem's search. ``summary`` gives the flat figures stored with its result."""

    root_prompt_tokens: int = 0
    generated_tokens: int = 0
    generated_steps: int = 0
    policy_calls: int = 0
    prompt_tokens: int = 0
    prefix_cached_tokens: int = 0
    preemptions: int = 0  # times the engine took a policy request's KV cache back (a full cache)
    prm_calls: int = 0
    prm_tokens: int = 0
    prm_dropped: int = 0
    embedded_steps: int = 0
    selections: int = 0
    selection_time_s: float = 0.0
    score_wait_s: float = 0.0  # per round: from the last expansion's return to the last PRM score
    embed_wait_s: float = 0.0  # per round: from the last PRM score to the last embedding
    solver_fallbacks: int = 0
    endpoint_moves: int = 0  # times the problem moved to another server after one failed (backends/fleet)
    depth: int = 0
    finished: int = 0
    waves: int = 0  # times the root was expanded: 1, or more where a stop rule samples in waves
    stop_reason: str | None = None  # "settled": the stop rule held; "complete": the search ran its course
    wall_time_s: float = 0.0
    kv_tokens: list[int] = field(default_factory=list)
    kv_blocks: list[int] = field(default_factory=list)
    kv_unshared_tokens: list[int] = field(default_factory=list)
    kv_frontier_tokens: list[int] = field(default_factory=list)
    expanded_nodes: list[int] = field(default_factory=list)
    cluster_ratios: list[float] = field(default_factory=list)

    def record_kv(self, tokens: int, blocks: int, unshared: int, frontier: int) -> None:
        """One selection step's KV size (SPEC §8.1: the candidates and their ancestors).

        ``frontier`` is the candidates' own step tokens: the part no selection rule can share, so
        ``kv_tokens - root_prompt_tokens - frontier`` is what a method can save at that step.
        """
        self.kv_tokens.append(tokens)
        self.kv_blocks.append(blocks)
        self.kv_unshared_tokens.append(unshared)
        self.kv_frontier_tokens.append(frontier)

    def record_allocation(self, counts: list[int], clusters: int | None) -> None:
        """How many candidates got children (the live branches the next step's KV will hold), and
        semantic clusters per candidate where the method clustered: near 1 means every step is its
        own cluster, so ETS's coverage term protects every candidate from pruning."""
        self.expanded_nodes.append(sum(1 for c in counts if c > 0))
        if clusters is not None:
            self.cluster_ratios.append(clusters / len(counts))

    def summary(self) -> MetricsSummary:
        """The flat figures stored with a result: the counters, and means and peaks of the per-step lists."""

        def mean(xs: list[int] | list[float]) -> float:
            return sum(xs) / len(xs) if xs else 0.0

        scalars = {k: v for k, v in vars(self).items() if not isinstance(v, list)}
        return MetricsSummary(
            **scalars,
            kv_tokens_mean=mean(self.kv_tokens),
            kv_tokens_peak=max(self.kv_tokens, default=0),
            kv_tokens_total=sum(self.kv_tokens),
            kv_blocks_mean=mean(self.kv_blocks),
            kv_blocks_peak=max(self.kv_blocks, default=0),
            kv_unshared_tokens_mean=mean(self.kv_unshared_tokens),
            kv_frontier_tokens_mean=mean(self.kv_frontier_tokens),
            expanded_nodes_mean=mean(self.expanded_nodes),
            cluster_ratio_mean=mean(self.cluster_ratios),  # 0.0: never clustered
        )


@dataclass(frozen=True)
class MetricsSummary:
    """One problem's search figures as a run file stores them (``SearchMetrics.summary``).

    A field is None when the result does not have it: a run file written by an older version, or a
    problem that failed before its search started. ``extra`` keeps numeric figures this version does
    not know (from a newer version), so that reading and writing a file back loses nothing.
    """

    root_prompt_tokens: float | None = None
    generated_tokens: float | None = None
    generated_steps: float | None = None
    policy_calls: float | None = None
    prompt_tokens: float | None = None
    prefix_cached_tokens: float | None = None
    preemptions: float | None = None
    prm_calls: float | None = None
    prm_tokens: float | None = None
    prm_dropped: float | None = None
    embedded_steps: float | None = None
    selections: float | None = None
    selection_time_s: float | None = None
    score_wait_s: float | None = None
    embed_wait_s: float | None = None
    solver_fallbacks: float | None = None
    endpoint_moves: float | None = None
    depth: float | None = None
    finished: float | None = None
    waves: float | None = None
    stop_reason: str | None = None  # the one figure that is not a number
    wall_time_s: float | None = None
    kv_tokens_mean: float | None = None
    kv_tokens_peak: float | None = None
    kv_tokens_total: float | None = None
    kv_blocks_mean: float | None = None
    kv_blocks_peak: float | None = None
    kv_unshared_tokens_mean: float | None = None
    kv_frontier_tokens_mean: float | None = None
    expanded_nodes_mean: float | None = None
    cluster_ratio_mean: float | None = None
    extra: Mapping[str, float] = field(default_factory=dict)

    def items(self) -> Iterator[tuple[str, float]]:
        """(name, value) of every numeric figure the result has, the unknown ones included."""
        for spec in fields(self):
            if spec.name not in ("extra", "stop_reason") and (value := getattr(self, spec.name)) is not None:
                yield spec.name, value
        yield from self.extra.items()

    def __getitem__(self, name: str) -> float | str | None:
        """``metrics["generated_tokens"]``, as when results held a dict: deprecated, use the attribute."""
        warnings.warn(
            f'metrics["{name}"] is deprecated: results hold a MetricsSummary, use metrics.{name}',
            DeprecationWarning,
            stacklevel=2,
        )
        if name in self.extra:
            return self.extra[name]
        if name == "extra" or name not in self.__dataclass_fields__:
            raise KeyError(name)
        return getattr(self, name)

    def to_dict(self) -> dict[str, float | str]:
        """The run file's ``metrics`` object."""
        figures: dict[str, float | str] = dict(self.items())
        if self.stop_reason is not None:
            figures["stop_reason"] = self.stop_reason
        return figures

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MetricsSummary:
        """Read a run file's ``metrics`` object; values that are not finite numbers are dropped, but
        for ``stop_reason``, a word."""
        known = {spec.name for spec in fields(cls)} - {"extra", "stop_reason"}
        numbers = {
            key: float(value) if isinstance(value, float) else value for key, value in data.items() if _is_number(value)
        }
        stop_reason = data.get("stop_reason")
        return cls(
            **{key: value for key, value in numbers.items() if key in known},
            stop_reason=stop_reason if isinstance(stop_reason, str) else None,
            extra={key: value for key, value in numbers.items() if key not in known},
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
