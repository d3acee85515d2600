"""Exception hierarchy. Each docstring says whether a batch run goes on after it."""

from __future__ import annotations


class EtsError(Exception):
    """Base class of every error raised by ets_async."""


class ConfigError(EtsError, ValueError):
    """A configuration value is invalid. Raised before any work starts; nothing runs."""


class ProblemError(EtsError, ValueError):
    """One problem is malformed (missing text, wrong type, prompt too long).

    Recoverable: that problem gets a result with ``error`` set and the batch goes on.
    """


class BackendError(EtsError):
    """An engine, PRM or embedder call failed for one problem.

    Recoverable: the problem's in-flight requests are aborted, it gets an error result,
    and the batch goes on.
    """


class SolverError(EtsError, RuntimeError):
    """HiGHS did not return an optimal solution for an ETS program.

    Recoverable: the selection falls back to the REBASE allocation and the fallback is counted.
    """
