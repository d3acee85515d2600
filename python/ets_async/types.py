"""Small frozen records passed between the search loop, the backends and the callers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import ProblemError


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

        for value, what in ((problem.id, "id"), (problem.text, "problem text"), (problem.reference, "reference answer")):
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


@dataclass
class ProblemResult:
    """What a search returns for one problem. ``error`` is None on success."""

    id: str
    problem: str
    method: str
    width: int
    reference: str | None = None
    answer: str | None = None
    correct: bool | None = None
    error: str | None = None
    candidates: list[Candidate] = field(default_factory=list)
    tree: dict[str, list] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (the run-file record)."""
        return asdict(self)
