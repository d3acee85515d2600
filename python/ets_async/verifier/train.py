"""Train a verifier from rollouts: run files of the policy's own searches on training problems ->
value labels -> hidden-state features -> every head variant -> the one that ranks held-back training
problems best, saved as a head file (``checkpoint.save_head``). ``ets-async train-verifier`` runs it.
"""

from __future__ import annotations

import json
import logging
import platform
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..results import HEADER_KEY, read_results
from .checkpoint import save_head
from .features import HiddenStateReader, TreeFeatures, extract_features, prompt_renderer
from .head import HeadKind, TrainedHead, TrainSettings, auroc, split_problems, train_head, within_problem_auroc
from .labels import LabeledTree, label_trees

log = logging.getLogger("ets_async")


@dataclass(frozen=True)
class VariantReport:
    """How one head variant did on the held-back problems."""

    kind: HeadKind
    layer: int
    leaf_auroc: float | None  # mean within-problem AUROC of finished trajectories
    problems: int  # held-back problems with both right and wrong trajectories
    node_auroc_by_depth: dict[int, float | None]  # inner and leaf nodes with a pure label, by depth
    pooled_leaf_auroc: float | None
    best_step: int


def read_rollouts(paths: Sequence[str | Path]) -> tuple[list[LabeledTree], dict[str, Any]]:
    """Labelled trees of every run file (a problem id seen twice is taken from its first file) and the
    first file's search config (its run header), which rendered the prompts."""
    trees: dict[str, LabeledTree] = {}
    config: dict[str, Any] = {}
    for path in paths:
        records = read_results(path)
        header: dict[str, Any] = next((r[HEADER_KEY] for r in records if HEADER_KEY in r), {})
        config = config or dict(header.get("config") or {})
        for tree in label_trees(records):
            trees.setdefault(tree.problem_id, tree)
    return list(trees.values()), config


def depth_aurocs(trees: Sequence[TreeFeatures], scores: Sequence[np.ndarray], max_depth: int = 8) -> dict[int, float | None]:
    """Within-problem AUROC at each depth, over nodes whose leaves below are all right or all wrong."""
    out: dict[int, float | None] = {}
    for depth in range(1, max_depth + 1):
        def pure_at_depth(t: TreeFeatures, d: int = depth) -> np.ndarray:
            return (t.depth == d) & ((t.value == 0.0) | (t.value == 1.0))

        out[depth], _ = within_problem_auroc(trees, scores, pure_at_depth)
    return out


def evaluate(head: TrainedHead, trees: Sequence[TreeFeatures], best_step: int = 0) -> VariantReport:
    scores = [head.logits(t.layers[head.layer]) for t in trees]
    leaf, problems = within_problem_auroc(trees, scores)
    right = [s for t, sc in zip(trees, scores) for s, v, leafy in zip(sc, t.value, t.is_leaf) if leafy and v >= 0.5]
    wrong = [s for t, sc in zip(trees, scores) for s, v, leafy in zip(sc, t.value, t.is_leaf) if leafy and v < 0.5]
    return VariantReport(head.kind, head.layer, leaf, problems, depth_aurocs(trees, scores), auroc(right, wrong), best_step)


def train_variants(
    train: Sequence[TreeFeatures],
    held_back: Sequence[TreeFeatures],
    layers: Sequence[int],
    kinds: Sequence[HeadKind],
    base: TrainSettings,
) -> list[tuple[TrainedHead, VariantReport]]:
    """Every (layer, kind) head, trained on ``train`` and judged on ``held_back``."""
    out = []
    for layer in layers:
        for kind in kinds:
            head = train_head(train, held_back, replace(base, layer=layer, kind=kind))
            best = max(head.history, key=lambda h: h[1])[0] if head.history else base.steps
            out.append((head, evaluate(head, held_back, best)))
    return out


def train_verifier(
    rollouts: Sequence[str | Path],
    policy_dir: str,
    out: Path,
    *,
    features_dir: Path,
    layers: Sequence[int] | None = None,
    kinds: Sequence[HeadKind] = ("linear", "mlp"),
    held_back: float = 0.2,
    settings: TrainSettings = TrainSettings(),
    time_limit_s: float | None = None,
    echo: Callable[[str], None] = print,
) -> tuple[TrainedHead, list[VariantReport], str]:
    """The whole recipe; returns the chosen head, every variant's report and the head file's sha256."""
    trees, config = read_rollouts(rollouts)
    if not trees:
        raise ValueError(f"no labelled trees in {', '.join(map(str, rollouts))} (no graded finished trajectories)")
    if layers is None:
        layers = default_layers(int(json.loads((Path(policy_dir) / "config.json").read_text())["num_hidden_layers"]))
    reader = HiddenStateReader(policy_dir, layers)
    echo(f"{len(trees)} labelled problems ({sum(t.mixed for t in trees)} with right and wrong trajectories), "
         f"{sum(len(t.nodes) for t in trees)} labelled nodes; layers {list(reader.layers)} of {reader.num_layers}")
    features = extract_features(trees, reader, prompt_renderer(reader.tokenizer, config), features_dir, limit_s=time_limit_s)
    held = split_problems([f.problem_id for f in features], held_back, settings.seed)
    train = [f for f in features if f.problem_id not in held]
    judge = [f for f in features if f.problem_id in held]
    echo(f"features of {len(features)} problems; training on {len(train)}, judging on {len(judge)} held-back problems")
    results = train_variants(train, judge, reader.layers, kinds, settings)
    for _, rep in results:
        echo(format_report(rep))
    head, chosen = max(results, key=lambda hr: -1.0 if hr[1].leaf_auroc is None else hr[1].leaf_auroc)
    metadata = {
        "policy": Path(policy_dir).name,
        "rollouts": [Path(p).name for p in rollouts],
        "problems": {"train": len(train), "held_back": len(judge)},
        "held_back_leaf_auroc": chosen.leaf_auroc,
        "settings": asdict(replace(settings, kind=head.kind, layer=head.layer)),
        "torch_platform": platform.machine(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    digest = save_head(head, out, metadata)
    echo(f"chose {head.kind} on layer {head.layer}: held-back within-problem AUROC {_fmt(chosen.leaf_auroc)}; "
         f"wrote {out} (sha256 {digest})")
    return head, [r for _, r in results], digest


def default_layers(num_layers: int) -> list[int]:
    """The last layer and the middle one."""
    return sorted({num_layers // 2, num_layers})


def format_report(rep: VariantReport) -> str:
    depths = " ".join(f"d{d}={_fmt(a)}" for d, a in rep.node_auroc_by_depth.items() if a is not None)
    return (f"  {rep.kind:<6} layer {rep.layer:>2}: within-problem AUROC {_fmt(rep.leaf_auroc)} over {rep.problems} problems "
            f"(pooled {_fmt(rep.pooled_leaf_auroc)}, best step {rep.best_step}); nodes by depth: {depths}")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
