"""ets_async: Efficient Tree Search (ETS) and its baselines for LLM reasoning, many problems at once
on one async inference engine.

    results = await ets_async.solve_many(problems, SearchConfig(method="ets", width=16))

Importing this package loads neither torch nor vLLM; engine backends load on first use.
"""

from __future__ import annotations

from .api import iter_solve, shutdown_default_backends, solve, solve_many, solve_many_sync
from .backends import Backends, load_backends
from .config import EngineConfig, SearchConfig
from .errors import (
    BackendError,
    ConfigError,
    CoreError,
    EngineDiedError,
    EtsError,
    ProblemError,
    RequestTimeoutError,
    RunFileError,
    SolverError,
    UnguardedScriptError,
)
from .metrics import MetricsSummary
from .records import RunInfo, RunRecord
from .search import METHODS
from .types import Candidate, ErrorKind, Problem, ProblemResult, Step, TreeRecord

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "MetricsSummary",
    "BackendError",
    "Backends",
    "Candidate",
    "ConfigError",
    "CoreError",
    "EngineDiedError",
    "EngineConfig",
    "ErrorKind",
    "EtsError",
    "Problem",
    "ProblemError",
    "ProblemResult",
    "RequestTimeoutError",
    "RunFileError",
    "RunInfo",
    "RunRecord",
    "SearchConfig",
    "SolverError",
    "Step",
    "TreeRecord",
    "UnguardedScriptError",
    "iter_solve",
    "load_backends",
    "shutdown_default_backends",
    "solve",
    "solve_many",
    "solve_many_sync",
]
