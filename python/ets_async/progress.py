"""Live progress of a run: one bar over problems with throughput, accuracy, prefix-hit and KV figures."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any

from tqdm.auto import tqdm

from .report import fmt, number

__all__ = ["RunProgress", "RunTally"]


class RunTally:
    """Running totals over the problem records of one session (what the bar shows)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.problems = 0
        self.errors = 0
        self.graded = 0
        self.correct = 0
        self.generated_tokens = 0.0
        self.prompt_tokens = 0.0
        self.cached_tokens = 0.0
        self.kv_mean_sum = 0.0
        self.kv_mean_count = 0
        self.kv_peak = 0.0

    def add(self, record: Mapping[str, Any]) -> None:
        """Count one finished problem's record (``ProblemResult.to_dict()``)."""
        self.problems += 1
        if record.get("error") is not None:
            self.errors += 1
        correct = record.get("correct")
        if isinstance(correct, bool):
            self.graded += 1
            self.correct += correct
        metrics = record.get("metrics") or {}
        generated = number(metrics.get("generated_tokens"))
        if generated is not None:
            self.generated_tokens += generated
        prompt, cached = number(metrics.get("prompt_tokens")), number(metrics.get("prefix_cached_tokens"))
        if prompt is not None and cached is not None:
            self.prompt_tokens += prompt
            self.cached_tokens += cached
        kv_mean, kv_peak = number(metrics.get("kv_tokens_mean")), number(metrics.get("kv_tokens_peak"))
        if kv_mean is not None:
            self.kv_mean_sum += kv_mean
            self.kv_mean_count += 1
        if kv_peak is not None:
            self.kv_peak = max(self.kv_peak, kv_peak)

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self.started

    def postfix(self) -> str:
        """'acc 3/5 | hit 87% | KV 412 (peak 980) | 1.2k tok/s' (parts without data are left out)."""
        parts = []
        if self.graded:
            parts.append(f"acc {self.correct}/{self.graded}")
        if self.errors:
            parts.append(f"err {self.errors}")
        if self.prompt_tokens > 0:
            parts.append(f"hit {100 * self.cached_tokens / self.prompt_tokens:.0f}%")
        if self.kv_mean_count:
            parts.append(f"KV {fmt(self.kv_mean_sum / self.kv_mean_count, 'compact')} (peak {fmt(self.kv_peak, 'compact')})")
        elapsed = self.elapsed_s
        if elapsed > 0 and self.problems:
            parts.append(f"{fmt(self.generated_tokens / elapsed, 'compact')} tok/s")
        return " | ".join(parts)


class RunProgress:
    """A tqdm bar over a run's problems (on stderr); ``quiet`` hides it but still keeps the tally.

    The bar appears on ``start`` (call it once the engine is up, so that start-up time does not
    count as search time). ``done`` problems are already in the run file (a resumed run): the bar
    starts there, and the rates it shows are this session's.
    """

    def __init__(self, total: int, *, done: int = 0, quiet: bool = False, desc: str = "problems") -> None:
        self.tally = RunTally()
        self.total, self.done, self.quiet, self.desc = total, done, quiet, desc
        self.bar: tqdm | None = None

    def start(self) -> None:
        """Show the bar and start the clocks."""
        if self.bar is not None:
            return
        self.tally.started = time.perf_counter()
        self.bar = tqdm(
            total=self.total,
            initial=self.done,
            desc=self.desc,
            unit="problem",
            disable=self.quiet,
            file=sys.stderr,
            dynamic_ncols=True,
            smoothing=0.1,
        )

    def update(self, record: Mapping[str, Any]) -> None:
        self.start()
        assert self.bar is not None
        self.tally.add(record)
        self.bar.set_postfix_str(self.tally.postfix(), refresh=False)
        self.bar.update(1)

    def write(self, message: str, file: Any = None) -> None:
        """Print a line (to stderr unless ``file`` says otherwise) above the bar without breaking it."""
        tqdm.write(message, file=file or sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> RunProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
