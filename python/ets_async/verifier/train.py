"""Train a verifier from rollouts: run files of the policy's own searches on training problems ->
value labels -> hidden-state features -> every head variant, judged by cross-validation over problems
(each problem's nodes predicted by a head that never saw that problem) -> the best variant trained on
every problem, saved as a head file (``verifier_checkpoint.save_head``). ``ets-async train-verifier`` runs it.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..results import read_header, read_results
from ..verifier_checkpoint import HeadKind, TrainedHead, check_servable, save_head
from .features import HiddenStateReader, TreeFeatures, extract_features, prompt_renderer
from .head import TrainSettings, auroc, fold_of, train_head, within_problem_auroc
from .labels import LabeledTree, label_trees

log = logging.getLogger("ets_async")


@dataclass(frozen=True)
class VariantReport:
    """How one head variant did on problems it was not trained on (cross-validation)."""

    kind: HeadKind
    layer: int
    steps: int  # the number of training steps with the best mean within-problem AUROC
    leaf_auroc: float | None  # mean within-problem AUROC of finished trajectories
    problems: int  # problems with both right and wrong trajectories
    pooled_leaf_auroc: float | None
    node_auroc_by_depth: dict[int, float | None]  # nodes whose leaves below are all right or all wrong


def read_rollouts(paths: Sequence[str | Path]) -> tuple[list[LabeledTree], dict[str, Any]]:
    """Labelled trees of every run file (a problem id seen twice is taken from its first file) and the
    first file's search config (its run header), which rendered the prompts."""
    trees: dict[str, LabeledTree] = {}
    config: dict[str, Any] = {}
    for path in paths:
        config = config or dict((read_header(path) or {}).get("config") or {})
        for tree in label_trees(read_results(path)):
            trees.setdefault(tree.problem_id, tree)
    return list(trees.values()), config


def depth_aurocs(
    trees: Sequence[TreeFeatures], scores: Sequence[np.ndarray], max_depth: int = 8
) -> dict[int, float | None]:
    """Within-problem AUROC at each depth, over nodes whose leaves below are all right or all wrong."""
    out: dict[int, float | None] = {}
    for depth in range(1, max_depth + 1):
        def pure_at_depth(t: TreeFeatures, d: int = depth) -> np.ndarray:
            return (t.depth == d) & ((t.value == 0.0) | (t.value == 1.0))

        out[depth], _ = within_problem_auroc(trees, scores, pure_at_depth)
    return out


def report_scores(
    kind: HeadKind, layer: int, steps: int, trees: Sequence[TreeFeatures], scores: Sequence[np.ndarray]
) -> VariantReport:
    leaf, problems = within_problem_auroc(trees, scores)
    right = [
        s
        for t, sc in zip(trees, scores, strict=True)
        for s, v, is_leaf in zip(sc, t.value, t.is_leaf, strict=True)
        if is_leaf and v >= 0.5
    ]
    wrong = [
        s
        for t, sc in zip(trees, scores, strict=True)
        for s, v, is_leaf in zip(sc, t.value, t.is_leaf, strict=True)
        if is_leaf and v < 0.5
    ]
    return VariantReport(kind, layer, steps, leaf, problems, auroc(right, wrong), depth_aurocs(trees, scores))


def cross_validate(
    features: Sequence[TreeFeatures],
    settings: TrainSettings,
    train_on: Callable[[int, list[TreeFeatures]], Sequence[TreeFeatures]] | None = None,
) -> VariantReport:
    """Train on all folds but one, score the held-out fold, for every fold; the number of steps is the
    one with the best mean within-problem AUROC over the folds, and the report is of the out-of-fold
    scores at that step. ``train_on(k, others)`` picks fold ``k``'s training problems from the other
    folds' (all of them by default; a learning curve trains on fewer against the same evaluation)."""
    folds = [
        [f for f in features if fold_of(f.problem_id, settings.folds, settings.seed) == k]
        for k in range(settings.folds)
    ]
    # out-of-fold scores by evaluation step: step -> problem id -> scores
    scores: dict[int, dict[str, np.ndarray]] = {}
    for k, held in enumerate(folds):
        if not held:
            continue
        train = [f for j, fold in enumerate(folds) if j != k for f in fold]
        if train_on is not None:
            train = list(train_on(k, train))

        def record(step: int, head: TrainedHead, held: list[TreeFeatures] = held) -> None:
            scores.setdefault(step, {}).update({t.problem_id: head.logits(t.layers[settings.layer]) for t in held})

        train_head(train, settings, record)
    by_step = {
        step: within_problem_auroc(features, [oof[f.problem_id] for f in features])[0] for step, oof in scores.items()
    }
    best = max(by_step, key=lambda step: (by_step[step] if by_step[step] is not None else -1.0, -step))
    return report_scores(settings.kind, settings.layer, best, features, [scores[best][f.problem_id] for f in features])


def train_verifier(
    rollouts: Sequence[str | Path],
    policy_dir: str,
    out: Path,
    *,
    features_dir: Path,
    layers: Sequence[int] | None = None,
    kinds: Sequence[HeadKind] = ("linear", "mlp"),
    settings: TrainSettings = TrainSettings(),
    time_limit_s: float | None = None,
    mixed_only: bool = False,
    echo: Callable[[str], None] = print,
) -> tuple[TrainedHead, list[VariantReport], str]:
    """The whole recipe; returns the chosen head, every variant's report and the head file's sha256.
    ``mixed_only`` trains on the problems with both right and wrong trajectories only: the ones the
    within-problem ranking learns from and is judged on, and about half the extraction time."""
    policy_config = check_servable(policy_dir)  # before hours of extraction, not after
    trees, config = read_rollouts(rollouts)
    if not trees:
        raise ValueError(f"no labelled trees in {', '.join(map(str, rollouts))} (no graded finished trajectories)")
    if mixed_only:
        trees = [t for t in trees if t.mixed]
        if not trees:
            raise ValueError(f"no problem in {', '.join(map(str, rollouts))} has both right and wrong trajectories")
    if layers is None:
        layers = default_layers(int(policy_config["num_hidden_layers"]))
    reader = HiddenStateReader(policy_dir, layers)
    echo(f"{len(trees)} labelled problems ({sum(t.mixed for t in trees)} with right and wrong trajectories), "
         f"{sum(len(t.nodes) for t in trees)} labelled nodes; layers {list(reader.layers)} of {reader.num_layers}")
    features = extract_features(
        trees, reader, prompt_renderer(reader.tokenizer, config), features_dir, limit_s=time_limit_s
    )
    by_id = {t.problem_id: t for t in trees}
    scored = [by_id[f.problem_id] for f in features if not np.isnan(by_id[f.problem_id].search_score).any()]
    baseline, mixed = within_problem_auroc(scored, [np.asarray(t.search_score) for t in scored])
    echo(f"features of {len(features)} problems; the rollouts' own PRM scores: within-problem AUROC {_fmt(baseline)} "
         f"over {mixed} problems; {settings.folds}-fold cross-validation over problems")
    reports = [
        cross_validate(features, replace(settings, layer=layer, kind=kind)) for layer in reader.layers for kind in kinds
    ]
    for rep in reports:
        echo(format_report(rep))
    chosen = max(reports, key=lambda r: -1.0 if r.leaf_auroc is None else r.leaf_auroc)
    final = replace(settings, layer=chosen.layer, kind=chosen.kind, steps=chosen.steps)
    head = train_head(features, final)
    metadata = {
        "policy": Path(policy_dir).name,
        "rollouts": [Path(p).name for p in rollouts],
        "problems": len(features),
        "mixed_only": mixed_only,
        "cross_validated_leaf_auroc": chosen.leaf_auroc,
        "settings": asdict(final),
        "machine": platform.machine(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    digest = save_head(head, out, metadata)
    echo(f"chose {head.kind} on layer {head.layer}, {final.steps} steps (cross-validated within-problem AUROC "
         f"{_fmt(chosen.leaf_auroc)}), trained on all {len(features)} problems; wrote {out} (sha256 {digest})")
    return head, reports, digest


def default_layers(num_layers: int) -> list[int]:
    """The last layer and the middle one."""
    return sorted({num_layers // 2, num_layers})


def format_report(rep: VariantReport) -> str:
    depths = " ".join(f"d{d}={_fmt(a)}" for d, a in rep.node_auroc_by_depth.items() if a is not None)
    return (f"  {rep.kind:<6} layer {rep.layer:>2}, {rep.steps:>4} steps: within-problem AUROC {_fmt(rep.leaf_auroc)} "
            f"over {rep.problems} problems (pooled {_fmt(rep.pooled_leaf_auroc)}); nodes by depth: {depths}")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
