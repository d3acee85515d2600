"""Preemptions per request, read from the stats the engine reports after each step.

A request is preempted when the engine takes its KV blocks back for others (the cache is full)
and later recomputes it. vLLM counts this per request but passes the count only to its stat
loggers, in the stats of the step where the request finished; ``PreemptionLog`` is such a logger,
keyed by request id. Imported only where vLLM is installed.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from vllm.v1.metrics.loggers import StatLoggerBase

MAX_UNCLAIMED = 4096
"""Counts of requests nobody asks about (aborted ones) are dropped, oldest first, beyond this many."""


class PreemptionLog(StatLoggerBase):
    """Preemptions of each finished request (the children of an ``n > 1`` request summed under its
    id), and of all requests. vLLM records a step's stats before any caller awaiting that step's
    outputs runs again, so a request's count is here when its final output is."""

    def __init__(self, vllm_config: Any = None, engine_index: int = 0) -> None:
        self.by_request: OrderedDict[str, int] = OrderedDict()
        self.total = 0

    def record(
        self,
        scheduler_stats: Any,
        iteration_stats: Any,
        mm_cache_stats: Any = None,
        engine_idx: int = 0,
    ) -> None:
        if iteration_stats is None:
            return
        self.total += iteration_stats.num_preempted_reqs
        for finished in iteration_stats.finished_requests:
            if finished.num_preemptions and finished.request_id is not None:
                key = finished.request_id
                self.by_request[key] = self.by_request.get(key, 0) + finished.num_preemptions
        while len(self.by_request) > MAX_UNCLAIMED:
            self.by_request.popitem(last=False)

    def log_engine_initialized(self) -> None:
        pass

    def pop(self, request_id: str) -> int:
        """The preemptions of a finished request (0 if none), forgotten once read."""
        return self.by_request.pop(request_id, 0)
