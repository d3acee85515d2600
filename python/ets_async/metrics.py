"""Per-problem counters: tokens, calls, KV size per selection step, cache hits, time."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SearchMetrics:
    """Counters of one problem's search. ``as_dict`` gives the flat record stored in results."""

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

    def as_dict(self) -> dict[str, float]:
        def mean(xs: list[int] | list[float]) -> float:
            return sum(xs) / len(xs) if xs else 0.0

        scalars = {k: v for k, v in vars(self).items() if not isinstance(v, list)}
        return {
            **scalars,
            "kv_tokens_mean": mean(self.kv_tokens),
            "kv_tokens_peak": max(self.kv_tokens, default=0),
            "kv_tokens_total": sum(self.kv_tokens),
            "kv_blocks_mean": mean(self.kv_blocks),
            "kv_blocks_peak": max(self.kv_blocks, default=0),
            "kv_unshared_tokens_mean": mean(self.kv_unshared_tokens),
            "kv_frontier_tokens_mean": mean(self.kv_frontier_tokens),
            "expanded_nodes_mean": mean(self.expanded_nodes),
            "cluster_ratio_mean": mean(self.cluster_ratios),  # 0.0: never clustered
        }
