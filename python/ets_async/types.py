"""Small frozen records passed between the search loop, the backends and the callers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Self

from .errors import BackendError, CoreError, EngineDiedError, ProblemError, RequestTimeoutError
from .metrics import MetricsSummary


@dataclass(frozen=True)
class Problem:
    """One reasoning problem. ``reference`` is the gold answer when known."""

    id: str
    text: str
    reference: str | None = None

    @classmethod
    def coerce(cls, item: Any, index: int) -> Problem:
        """Build a Problem from a string, a mapping or a Problem; raise ProblemError if malformed.

        Ids default to the item's position in the batch, so results can always be matched to inputs.
        """
        if isinstance(item, Problem):
            problem = item
        elif isinstance(item, str):
            problem = cls(id=str(index), text=item)
        elif isinstance(item, Mapping):
            from .datasets import normalise_row  # the one normaliser of problem rows

            try:
                row = normalise_row(item, index)
            except ProblemError as exc:
                shown = str(item.get("id", index)).encode("utf-8", "backslashreplace").decode()
                raise ProblemError(f"problem {shown}: {exc}") from None
            problem = cls(id=row["id"], text=row["problem"], reference=row["answer"])
        else:
            raise ProblemError(
                f"problem {index}: expected a string, a mapping or a Problem, got {type(item).__name__}"
            )
        if not isinstance(problem.text, str):
            raise ProblemError(f"problem {problem.id}: text must be a string, got {type(problem.text).__name__}")
        if not problem.text.strip():
            raise ProblemError(f"problem {problem.id}: empty problem text")
        from .datasets import check_unicode

        for value, what in (
            (problem.id, "id"),
            (problem.text, "problem text"),
            (problem.reference, "reference answer"),
        ):
            if value is not None:
                try:
                    check_unicode(value, f"the {what}")
                except ProblemError as exc:
                    raise ProblemError(f"problem {index}: {exc}") from None
        return problem


@dataclass(frozen=True)
class Step:
    """One generated reasoning step: the tokens that extend the parent's prompt."""

    token_ids: tuple[int, ...]
    text: str
    finished: bool
    logprobs: tuple[float, ...] | None = None  # of each sampled token, when the policy was asked for them


@dataclass(frozen=True)
class Candidate:
    """A finished trajectory: a candidate answer with the PRM score of every step."""

    text: str
    answer: str | None
    step_scores: tuple[float, ...]
    tokens: int
    node: int


@dataclass(frozen=True)
class TreeRecord:
    """A finished search's tree, one entry per node; node 0 is the root (the prompt)."""

    parents: tuple[int, ...] = ()  # the root's parent is -1
    step_tokens: tuple[int, ...] = ()
    scores: tuple[float, ...] = ()  # the PRM score of each node's newest step (NaN: not scored)
    finished: tuple[bool, ...] = ()
    texts: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TreeRecord:
        """Read a run file's ``tree`` object (an empty one is the empty tree)."""
        tree = cls(**{name: tuple(data.get(name) or ()) for name in cls.__dataclass_fields__})
        sizes = {len(getattr(tree, name)) for name in cls.__dataclass_fields__ if getattr(tree, name)}
        if len(sizes) > 1:
            raise ValueError(f"the tree's lists have different lengths ({sorted(sizes)}): one entry per node expected")
        return tree


class ErrorKind(StrEnum):
    """Why a problem has no answer, for callers that act on it without reading the message."""

    PROBLEM = "problem"  # the problem is malformed (ProblemError): fix the input
    TIMEOUT = "timeout"  # the search ran past ``problem_timeout_s``
    REQUEST_TIMEOUT = "request_timeout"  # one engine request ran past ``request_timeout_s``
    ENGINE_DIED = "engine_died"  # new backends are needed; a resumed run does the problem again
    WORKER_DIED = "worker_died"  # the process searching it died at every try (a Ray actor, ray_batch)
    BACKEND = "backend"  # another policy, PRM or embedder call failed
    CORE = "core"  # the Rust core refused the tree or the scores
    INTERNAL = "internal"  # anything else: a bug in ets_async

    @classmethod
    def of(cls, error: BaseException) -> ErrorKind:
        for error_type, kind in _KIND_OF_ERROR:
            if isinstance(error, error_type):
                return kind
        return cls.INTERNAL

    @classmethod
    def from_message(cls, message: str) -> ErrorKind:
        """The kind of an error written before results carried one (run files of version 1), from
        the message's form: ``"<ErrorType>: ..."``, ``"timed out after ..."`` or ``"problem <id>: ..."``."""
        if message.startswith("timed out after "):
            return cls.TIMEOUT
        name = message.partition(":")[0]
        for error_type, kind in _KIND_OF_ERROR:
            if name == error_type.__name__:
                return kind
        return cls.PROBLEM if message.startswith("problem ") else cls.INTERNAL


_KIND_OF_ERROR: tuple[tuple[type[BaseException], ErrorKind], ...] = (  # subclasses first
    (ProblemError, ErrorKind.PROBLEM),
    (EngineDiedError, ErrorKind.ENGINE_DIED),
    (RequestTimeoutError, ErrorKind.REQUEST_TIMEOUT),
    (BackendError, ErrorKind.BACKEND),
    (CoreError, ErrorKind.CORE),
)


@dataclass
class ProblemResult:
    """What a search returns for one problem. ``error`` is None on success; otherwise ``error_kind``
    says what kind of failure it was."""

    id: str
    problem: str
    method: str
    width: int
    reference: str | None = None
    answer: str | None = None
    correct: bool | None = None
    error: str | None = None
    error_kind: ErrorKind | None = None
    candidates: list[Candidate] = field(default_factory=list)
    tree: TreeRecord = field(default_factory=TreeRecord)
    metrics: MetricsSummary = field(default_factory=MetricsSummary)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (the problem's part of a run-file record)."""
        record = {name: getattr(self, name) for name in ProblemResult.__dataclass_fields__}
        record["candidates"] = [asdict(c) for c in self.candidates]
        record["tree"] = asdict(self.tree)
        record["metrics"] = self.metrics.to_dict()
        return record

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Read ``to_dict``'s form back; ValueError, TypeError or KeyError if it is malformed."""
        return cls(**cls._fields_from_dict(data))

    @classmethod
    def _fields_from_dict(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        error = data.get("error")
        kind = data.get("error_kind")
        return {
            "id": str(data["id"]),
            "problem": str(data.get("problem", "")),
            "method": str(data.get("method") or ""),
            "width": data.get("width"),
            "reference": data.get("reference"),
            "answer": data.get("answer"),
            "correct": data.get("correct") if isinstance(data.get("correct"), bool) else None,
            "error": error,
            "error_kind": None if error is None else ErrorKind(kind) if kind else ErrorKind.from_message(str(error)),
            "candidates": [
                Candidate(
                    c.get("text", ""),
                    c.get("answer"),
                    tuple(c.get("step_scores") or ()),
                    c.get("tokens", 0),
                    c.get("node", -1),
                )
                for c in data.get("candidates") or ()
            ],
            "tree": TreeRecord.from_dict(data.get("tree") or {}),
            "metrics": MetricsSummary.from_dict(data.get("metrics") or {}),
        }
