"""Live progress of a run: one bar over problems with throughput, accuracy, prefix-hit and KV figures."""

from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm

from .report import Summary
from .types import ProblemResult

__all__ = ["RunProgress"]


class RunProgress:
    """A tqdm bar over a run's problems (on stderr); ``quiet`` hides it but still keeps the tally.

    The bar appears on ``start`` (call it once the engine is up, so that start-up time does not
    count as search time). ``done`` problems are already in the run file (a resumed run): the bar
    starts there, and the rates it shows are this session's.
    """

    def __init__(self, total: int, *, done: int = 0, quiet: bool = False, desc: str = "problems") -> None:
        self.summary = Summary()  # of this session's results
        self.started = time.perf_counter()
        self.total, self.done, self.quiet, self.desc = total, done, quiet, desc
        self.bar: tqdm | None = None

    def start(self) -> None:
        """Show the bar and start the clocks."""
        if self.bar is not None:
            return
        self.started = time.perf_counter()
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

    def update(self, result: ProblemResult) -> None:
        self.start()
        assert self.bar is not None
        self.summary.add(result)
        self.bar.set_postfix_str(self.summary.postfix(time.perf_counter() - self.started), refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> RunProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
