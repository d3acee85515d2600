"""Exception hierarchy. Each docstring says whether a batch run goes on after it."""

from __future__ import annotations


class EtsError(Exception):
    """Base class of every error raised by ets_async."""


class ConfigError(EtsError, ValueError):
    """A configuration value is invalid. Raised before any work starts; nothing runs."""


class UnguardedScriptError(EtsError, RuntimeError):
    """A script starts an engine in code that also runs on import. vLLM runs its engine in a process of
    its own that imports the main script again (spawn), where that code would start another engine.
    Nothing runs: put the code under ``if __name__ == "__main__":``."""


class ProblemError(EtsError, ValueError):
    """One problem is malformed (missing text, wrong type, prompt too long).

    Recoverable: that problem gets a result with ``error`` set and the batch goes on.
    """


class BackendError(EtsError):
    """An engine, PRM or embedder call failed for one problem.

    Recoverable: the problem's in-flight requests are aborted, it gets an error result,
    and the batch goes on.
    """


class EngineDiedError(BackendError):
    """The inference engine died: one of its processes was killed, ran out of memory or crashed.

    Not recoverable for these backends: every problem in flight ends with this error, whose message
    names the process and how it ended, and every later request fails at once. Start new backends
    (``load_backends``) to go on. ``solve_many`` still returns one result per problem;
    ``ets-async run`` stops, keeps the results it wrote and exits nonzero, so running it again resumes.
    """


class RequestTimeoutError(BackendError, TimeoutError):
    """An engine request ran past its time limit (``EngineConfig.request_timeout_s``) and was aborted
    on the engine. Recoverable: that problem gets an error result and the batch goes on."""


class CoreError(EtsError, ValueError):
    """Bad input to the Rust core (``ets_async._core``); the message says what to fix.

    Raised by the core for a malformed tree, bad scores or counts. Within a search it fails that
    problem only (an error result; the batch goes on).
    """


class SolverError(EtsError, RuntimeError):
    """HiGHS did not return an optimal solution for an ETS program.

    Recoverable: the selection falls back to the REBASE allocation and the fallback is counted.
    """


class RunFileError(EtsError, ValueError):
    """Run files cannot be summarised together (a problem counted twice, or one summary over two
    different searches). Raised before any summary; the message names the files and lines."""
