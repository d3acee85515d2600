"""Calibrating ETS's clustering cut for an embedder, from the trees of real searches.

ETS's coverage term (SPEC §5.4) rewards keeping one candidate of every semantic cluster; the
clusters come from average-linkage cosine clustering of the candidates' newest steps, cut at a
distance. A cut only means something for the embedder it was chosen on (the paper's 0.05 belongs to
a math-similarity BERT). This module chooses it for any embedder:

1. The groups: every selection step of a recorded search (``ProblemResult.tree`` keeps each node's
   step text) clusters the newest steps of its unfinished candidates; each such group is kept.
2. The labels, by a rule that needs no human: two steps are *equivalent* when they compute the same
   numbers (the set of values stated after ``=``, or every number when the step states no result),
   and two final steps when they reach the same answer. Equal results mean the same progress through
   the problem however it is worded, and that is what coverage should not count twice; steps that
   state no number (plans, restatements) cannot be judged and are left out of the pairs.
3. The sweep: for each cut, cluster every group as ETS would and count, over labelled pairs of one
   group, how often "same cluster" agrees with "equivalent": precision, recall and F1. The chosen cut
   maximises F1.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import core
from .answers import NUMBER_PATTERN, extract_answer, numeric_value, read_number, read_numbers
from .types import ProblemResult

__all__ = ["CutScore", "equivalence_key", "selection_groups", "sweep_cuts"]

_RESULT_RE = re.compile(rf"=\s*\\?\$?\s*({NUMBER_PATTERN})")


@dataclass(frozen=True)
class CutScore:
    """How well one cut's clusters agree with the equivalence labels."""

    cut: float
    precision: float
    recall: float
    f1: float
    clusters_per_step: float  # what ETS's cluster ratio would be at this cut


def equivalence_key(step: str) -> tuple[str, Any] | None:
    """What a step establishes: ("answer", value) for a final step, ("numbers", set) for one that
    computes something, None when it states no number (not labelled)."""
    answer = extract_answer(step)
    if answer is not None:
        value = numeric_value(answer)
        return ("answer", value if value is not None else answer.strip())
    results = {v for t in _RESULT_RE.findall(step) if (v := read_number(t)) is not None} or set(read_numbers(step))
    return ("numbers", frozenset(results)) if results else None


def selection_groups(results: Iterable[ProblemResult]) -> Iterator[list[str]]:
    """The newest-step texts each selection step of each recorded search clustered: the unfinished
    nodes of one depth (at least two distinct texts)."""
    for result in results:
        parents, finished, texts = result.tree.parents, result.tree.finished, result.tree.texts
        if not parents or not texts or not finished:
            continue
        depth = [0] * len(parents)
        by_depth: dict[int, list[str]] = {}
        for node in range(1, len(parents)):
            depth[node] = depth[parents[node]] + 1
            if not finished[node]:
                by_depth.setdefault(depth[node], []).append(texts[node])
        for group in by_depth.values():
            if len(group) >= 2 and len(set(group)) >= 2:
                yield group


def sweep_cuts(
    groups: Sequence[Sequence[str]], embed: Callable[[list[str]], np.ndarray], cuts: Sequence[float]
) -> list[CutScore]:
    """Precision, recall and F1 of ETS's clusters at each cut against the equivalence labels."""
    unique = sorted({text for group in groups for text in group})
    vectors = embed(unique)
    row = {text: i for i, text in enumerate(unique)}
    keys = {text: equivalence_key(text) for text in unique}
    scores = []
    for cut in cuts:
        tp = fp = fn = clusters = steps = 0
        for group in groups:
            labels = core.cluster_steps(vectors[[row[t] for t in group]], cut)
            clusters += len(set(labels))
            steps += len(group)
            for i in range(len(group)):
                for j in range(i + 1, len(group)):
                    a, b = keys[group[i]], keys[group[j]]
                    if a is None or b is None:
                        continue
                    same, together = a == b, labels[i] == labels[j]
                    tp += same and together
                    fp += together and not same
                    fn += same and not together
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        scores.append(CutScore(cut, precision, recall, f1, clusters / steps if steps else 0.0))
    return scores


def best_cut(scores: Sequence[CutScore]) -> CutScore:
    """The cut with the highest F1 (the smaller cut on ties: fewer merges of distinct steps)."""
    return max(scores, key=lambda s: (s.f1, -s.cut))
