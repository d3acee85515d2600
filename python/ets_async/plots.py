"""Figures of run summaries: accuracy against KV size and generated tokens, and throughput, per method and width."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["plot_summaries"]


def _name(row: Mapping[str, Any]) -> str:
    return str(row.get("label") or row["method"])


def _series(rows: Sequence[Mapping[str, Any]], x_key: str) -> dict[str, list[tuple[float, float, Any, float, float]]]:
    """run label -> [(x, accuracy, width, CI low, CI high)] sorted by width, for rows with both values."""
    series: dict[str, list[tuple[float, float, Any, float, float]]] = {}
    for row in rows:
        x, y = row.get(x_key), row.get("accuracy")
        if x is None or y is None:
            continue
        low, high = row.get("accuracy_low"), row.get("accuracy_high")
        low, high = (y, y) if low is None or high is None else (low, high)
        series.setdefault(_name(row), []).append(
            (float(x), 100.0 * float(y), row.get("width"), 100.0 * low, 100.0 * high)
        )
    for points in series.values():
        points.sort(key=lambda p: (p[2] is None, p[2] or 0))
    return series


def plot_summaries(
    rows: Sequence[Mapping[str, Any]], path: str | os.PathLike[str], *, title: str | None = None
) -> Path:
    """Write a PNG with three panels and return its path.

    ``rows`` are run summaries (``report.summary_rows``) with keys ``label`` (or ``method``),
    ``width``, ``accuracy`` (0..1) and its interval ``accuracy_low``/``accuracy_high``,
    ``kv_tokens_mean``, ``generated_tokens_mean`` and ``problems_per_s`` (any may be None; such
    points are left out). Panels: accuracy vs mean KV size (tokens), accuracy vs generated tokens
    per problem (one line of markers per run label, points labelled by width, 95% intervals as
    error bars), and throughput (problems/s) per run as bars.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    methods = sorted({_name(row) for row in rows})
    colors = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    markers = dict(zip(methods, "osD^vP*Xh<>", strict=False))

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    panels = (
        (axes[0], "kv_tokens_mean", "mean KV cache size (tokens per selection step)"),
        (axes[1], "generated_tokens_mean", "generated tokens per problem"),
    )
    for ax, key, xlabel in panels:
        for method, points in sorted(_series(rows, key).items()):
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            errors = [
                [y - p[3] for y, p in zip(ys, points, strict=True)],
                [p[4] - y for y, p in zip(ys, points, strict=True)],
            ]
            ax.errorbar(xs, ys, yerr=errors, marker=markers.get(method, "o"), color=colors[method], label=method,
                        linewidth=1, capsize=3, elinewidth=0.8)
            for x, y, width, _, _ in points:
                ax.annotate(f"W={width}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(-3, 103)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    axes[0].set_title("accuracy vs KV cache size")
    axes[1].set_title("accuracy vs generated tokens")

    ax = axes[2]
    bars = [row for row in rows if row.get("problems_per_s") is not None]
    bars.sort(key=lambda r: (_name(r), r.get("width") or 0))
    labels = [f"{_name(row)}\nW={row.get('width')}" for row in bars]
    ax.bar(
        range(len(bars)),
        [float(row["problems_per_s"]) for row in bars],
        color=[colors[_name(row)] for row in bars],
    )
    ax.set_xticks(range(len(bars)), labels, fontsize=8)
    ax.set_ylabel("problems / s")
    ax.set_title("throughput")
    ax.grid(True, axis="y", alpha=0.3)
    if not bars:
        ax.text(0.5, 0.5, "no wall time recorded", ha="center", va="center", transform=ax.transAxes)

    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, format="png")
    plt.close(fig)
    return out
