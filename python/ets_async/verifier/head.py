"""The verifier's head: a small torch model on the frozen policy's hidden states, trained to give
right trajectories (and partial solutions with many right leaves below) higher values than wrong ones
of the same problem, and how it is judged (the within-problem AUROC).

The loss has two parts: a pointwise binary cross-entropy against each node's value label (the share
of right leaves below it), and a pairwise logistic loss over pairs of nodes of the same problem with
different values, weighted by the difference. The second is what choosing among one problem's
candidates needs: pooled accuracy mostly measures how hard problems are.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..verifier_checkpoint import HeadKind, TrainedHead
from .features import TreeFeatures


@dataclass(frozen=True)
class TrainSettings:
    """How a head is trained (defaults chosen on held-back training problems, never on test problems)."""

    kind: HeadKind = "linear"
    layer: int = 28
    mlp_width: int = 128
    steps: int = 400  # the most; cross-validation picks how many
    learning_rate: float = 1e-3
    weight_decay: float = 1e-2
    rank_weight: float = 1.0  # the pairwise loss's weight beside the pointwise one
    eval_every: int = 20
    folds: int = 5
    seed: int = 0


def auroc(positives: Sequence[float], negatives: Sequence[float]) -> float | None:
    """P(a random positive scores above a random negative), ties counting half; None if a side is empty."""
    if len(positives) == 0 or len(negatives) == 0:
        return None
    pos = np.asarray(positives, dtype=np.float64)[:, None]
    neg = np.asarray(negatives, dtype=np.float64)[None, :]
    return float(((pos > neg) + 0.5 * (pos == neg)).mean())


class Graded(Protocol):
    """A problem's nodes with their value labels (``TreeFeatures``, ``LabeledTree``)."""

    @property
    def value(self) -> Any: ...

    @property
    def is_leaf(self) -> Any: ...


def within_problem_auroc(
    trees: Sequence[Graded], scores: Sequence[np.ndarray], select: Callable[[Any], np.ndarray] | None = None
) -> tuple[float | None, int]:
    """The mean over problems of the AUROC of ``scores`` separating right from wrong nodes of the same
    problem (by default the finished trajectories: leaves, value 1 against 0), and how many problems
    had both. ``select`` picks other nodes (a boolean mask per tree), whose value is rounded to right/wrong."""
    values = []
    for tree, score in zip(trees, scores, strict=True):
        mask = np.asarray(tree.is_leaf, dtype=bool) if select is None else select(tree)
        right = np.asarray(tree.value)[mask] >= 0.5
        score = np.asarray(score)[mask]
        a = auroc(score[right], score[~right])
        if a is not None:
            values.append(a)
    return (statistics.fmean(values) if values else None), len(values)


def fold_of(problem_id: str, folds: int, seed: int = 0) -> int:
    """A problem's cross-validation fold: a hash of its id (stable whatever the file order)."""
    import hashlib

    return int(hashlib.blake2b(f"{seed}:{problem_id}".encode(), digest_size=4).hexdigest(), 16) % folds


def _batch(trees: Sequence[TreeFeatures], layer: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.concatenate([t.layers[layer] for t in trees]).astype(np.float32)
    y = np.concatenate([t.value for t in trees]).astype(np.float32)
    group = np.concatenate([np.full(len(t.value), i) for i, t in enumerate(trees)])
    return x, y, group


def _pairs(values: np.ndarray, group: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index pairs (better, worse) of nodes of the same problem with different values, and their weights."""
    better, worse = [], []
    for g in np.unique(group):
        idx = np.flatnonzero(group == g)
        v = values[idx]
        hi, lo = np.nonzero(v[:, None] > v[None, :])
        better.append(idx[hi])
        worse.append(idx[lo])
    b = np.concatenate(better) if better else np.zeros(0, dtype=np.int64)
    w = np.concatenate(worse) if worse else np.zeros(0, dtype=np.int64)
    return b, w, (values[b] - values[w]).astype(np.float32)


def train_head(
    train: Sequence[TreeFeatures], settings: TrainSettings, on_eval: Callable[[int, TrainedHead], None] | None = None
) -> TrainedHead:
    """Train one head for ``settings.steps`` full-batch steps; ``on_eval(step, head)`` sees the head
    every ``settings.eval_every`` steps (cross-validation picks the number of steps with it)."""
    import torch
    from torch import nn

    torch.manual_seed(settings.seed)
    x_np, y_np, group = _batch(train, settings.layer)
    mean, std = x_np.mean(0), x_np.std(0) + 1e-4
    x = torch.from_numpy((x_np - mean) / std)
    y = torch.from_numpy(y_np)
    better, worse, pair_w = (torch.from_numpy(a) for a in _pairs(y_np, group))
    size = x.shape[1]
    if settings.kind == "linear":
        model: nn.Module = nn.Linear(size, 1)
    else:
        model = nn.Sequential(nn.Linear(size, settings.mlp_width), nn.ReLU(), nn.Linear(settings.mlp_width, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    for step in range(1, settings.steps + 1):
        z = model(x).squeeze(-1)
        loss = nn.functional.binary_cross_entropy_with_logits(z, y)
        if settings.rank_weight and len(pair_w):
            ranking = (nn.functional.softplus(z[worse] - z[better]) * pair_w).sum() / pair_w.sum()
            loss = loss + settings.rank_weight * ranking
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if on_eval is not None and step % settings.eval_every == 0:
            on_eval(step, _folded(model, settings, mean, std))
    return _folded(model, settings, mean, std)


def _folded(model, settings: TrainSettings, mean: np.ndarray, std: np.ndarray) -> TrainedHead:
    """The trained weights with the standardisation folded in, so the head reads raw hidden states."""
    params = [p.detach().numpy().astype(np.float64) for p in model.parameters()]
    if settings.kind == "linear":
        w, b = params[0][0], params[1][0]
        a = w / std
        return TrainedHead(
            "linear", settings.layer, {"a": a.astype(np.float32), "c": np.float32(b - a @ mean).reshape(1)}
        )
    u, d, v, e = params[0], params[1], params[2][0], params[3][0]
    u_raw = u / std[None, :]
    weights = {"U": u_raw, "d": d - u_raw @ mean, "v": v, "e": np.array([e])}
    return TrainedHead("mlp", settings.layer, {k: np.asarray(val, dtype=np.float32) for k, val in weights.items()})
