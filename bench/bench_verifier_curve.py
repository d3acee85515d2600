"""Would more rollouts make a better verifier? A learning curve of the head on a fixed evaluation.

    python bench/bench_verifier_curve.py
    python bench/bench_verifier_curve.py --fractions 0.5 1 --draws 5 --kinds linear

The training problems with both right and wrong trajectories (the only ones whose finished
trajectories can be ranked) are split into folds over problems. Each fold is scored by heads trained
on n problems drawn from the other folds, n from a quarter of them to all of them, several draws per
n; the figure at each n is the mean within-problem AUROC of the finished trajectories at the number
of training steps that did best (the same choice ``train-verifier``'s cross-validation makes, so
every n gets the same optimism). Cross-validation over growing sets of problems cannot tell this:
there the evaluation problems change with n.

It also reports a head (``--head``, the shipped one by default) on the rollout problems it was trained
on (the first ``problems`` of its metadata, in the file's order, of the mixed ones if it was trained
``--mixed-only``) and on the ones it never saw. Features come from
``train-verifier``'s cache; missing ones are extracted first (about 10 s a problem on two cores).
"""

from __future__ import annotations

import argparse
import importlib.resources
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import numpy as np
from ets_async import models
from ets_async.verifier.features import (
    HiddenStateReader,
    TreeFeatures,
    default_features_dir,
    extract_features,
    prompt_renderer,
)
from ets_async.verifier.head import TrainSettings, within_problem_auroc
from ets_async.verifier.train import cross_validate, read_rollouts
from ets_async.verifier_checkpoint import HeadKind, load_head

ROOT = Path(__file__).resolve().parents[1]
VERIFIERS_DIR = Path(str(importlib.resources.files("ets_async") / "data" / "verifiers"))


def curve_point(
    features: Sequence[TreeFeatures], settings: TrainSettings, fraction: float, draw: int
) -> tuple[int, int, float]:
    """Cross-validation training each fold on ``fraction`` of the other folds' problems (draw ``draw``):
    (problems trained on, best step, AUROC there)."""
    trained_on = 0

    def subset(k: int, others: list[TreeFeatures]) -> list[TreeFeatures]:
        nonlocal trained_on
        trained_on = round(fraction * len(others))
        picked = np.random.default_rng(1000 * draw + k).choice(len(others), trained_on, replace=False)
        return [others[i] for i in sorted(picked)]

    report = cross_validate(features, settings, subset)
    return trained_on, report.steps, report.leaf_auroc or 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rollouts", type=Path, nargs="+", default=[ROOT / "data/rollouts/gsm8k_train-rebase-8.jsonl"])
    parser.add_argument("--model", default=None, help="the policy that made the rollouts [default: the registry's]")
    parser.add_argument("--features-dir", type=Path, default=None, help="[default: train-verifier's cache]")
    parser.add_argument("--layer", type=int, default=28)
    parser.add_argument("--kinds", nargs="+", default=["mlp", "linear"], choices=["mlp", "linear"])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 0.75, 1.0])
    parser.add_argument("--draws", type=int, default=3, help="draws of the training problems per fraction below 1")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument(
        "--head", type=Path, default=VERIFIERS_DIR / "qwen2.5-coder-1.5b-instruct-gsm8k.safetensors",
        help="a head file to report on the problems it was and was not trained on",
    )
    args = parser.parse_args()
    if any(not 0 < f <= 1 for f in args.fractions):
        parser.error("--fractions must be in (0, 1]")

    head, metadata = load_head(args.head)
    policy_dir = models.resolve_model(args.model)
    trees, config = read_rollouts(args.rollouts)
    mixed = [t for t in trees if t.mixed]
    reader = HiddenStateReader(policy_dir, sorted({args.layer, head.layer}))
    features = extract_features(
        mixed, reader, prompt_renderer(reader.tokenizer, config), args.features_dir or default_features_dir(policy_dir)
    )
    print(f"{len(trees)} labelled problems, {len(features)} with right and wrong trajectories; layer {args.layer}, "
          f"{args.folds} folds; within-problem AUROC of finished trajectories, mean over every fold's problems")

    for kind in args.kinds:
        settings = TrainSettings(
            kind=cast(HeadKind, kind), layer=args.layer, steps=args.steps, eval_every=20, folds=args.folds
        )
        for fraction in args.fractions:
            draw_count = 1 if fraction == 1 else args.draws
            runs = [curve_point(features, settings, fraction, draw) for draw in range(draw_count)]
            aurocs = [a for _, _, a in runs]
            draws = ", ".join(f"{a:.3f}" for a in aurocs)
            steps = ", ".join(str(s) for _, s, _ in runs)
            print(f"  {kind:<6} trained on {runs[0][0]:>4} problems: AUROC {statistics.fmean(aurocs):.3f} "
                  f"(draws {draws}; best steps {steps})")

    # the head saw the first ``problems`` of the trees it was given: all of them, or (--mixed-only) the mixed ones
    given = mixed if metadata.get("mixed_only") else trees
    trained_on = {t.problem_id for t in given[: int(metadata.get("problems", 0))]}
    for name, seen in (("trained on", True), ("never saw", False)):
        part = [f for f in features if (f.problem_id in trained_on) == seen]
        auc, count = within_problem_auroc(part, [head.logits(f.layers[head.layer]) for f in part])
        print(f"{args.head.name} on the {count} problems it {name}: AUROC {'-' if auc is None else f'{auc:.3f}'}")


if __name__ == "__main__":
    main()
