"""Problem files (GSM8K / MATH JSONL) -> normalised problems {"id", "problem", "answer"}; bad rows
reported; ``Shard``, the one rule that splits a dataset between coordinators by problem id."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .answers import reference_answer
from .errors import ConfigError, ProblemError

__all__ = [
    "PROBLEM_FIELDS",
    "Shard",
    "check_unicode",
    "load_hf_dataset",
    "load_problems",
    "normalise_row",
    "normalise_rows",
]

PROBLEM_FIELDS = ("problem", "question")
"""Fields that hold the problem text, tried in this order (MATH, then GSM8K)."""
ID_FIELDS = ("id", "unique_id")


def check_unicode(text: str, what: str) -> str:
    """``text`` if it is valid Unicode (encodable as UTF-8); else ProblemError naming the first lone
    surrogate, which JSON escapes such as ``"\\ud800"`` produce and no tokenizer or file accepts."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ProblemError(
            f"{what} contains a lone surrogate (U+{ord(text[exc.start]):04X} at character {exc.start}), "
            "which is not valid Unicode text: fix the input's encoding"
        ) from None
    return text


def normalise_row(
    row: Any,
    index: int,
    *,
    question_field: str | None = None,
    answer_field: str | None = None,
    id_field: str | None = None,
) -> dict[str, Any]:
    """One problem ``{"id", "problem", "answer"}`` from a dataset row; raise ProblemError saying why not.

    The one normaliser of problems: ``load_problems`` and ``solve_many`` (``Problem.coerce``) both
    use it, so a GSM8K row's ``answer`` ("... #### 8") is the reference "8" whichever way it came in.
    """
    if not isinstance(row, Mapping):
        raise ProblemError(f"expected a JSON object, got {type(row).__name__}")
    if question_field is not None:
        if question_field not in row:
            raise ProblemError(f"missing field {question_field!r}")
        field = question_field
    else:
        field = next((name for name in PROBLEM_FIELDS if name in row), "")
        if not field:
            raise ProblemError(f"missing problem text (expected one of {'/'.join(PROBLEM_FIELDS)})")
    text = row[field]
    if not isinstance(text, str):
        raise ProblemError(f"field {field!r} is not a string (got {type(text).__name__})")
    if not text.strip():
        raise ProblemError("empty problem text")
    if answer_field is not None and answer_field not in row:
        raise ProblemError(f"missing field {answer_field!r}")
    if id_field is not None:
        if row.get(id_field) is None:
            raise ProblemError(f"missing field {id_field!r}")
        raw_id = row[id_field]
    else:
        raw_id = next((row[name] for name in ID_FIELDS if row.get(name) is not None), index)
    if isinstance(raw_id, (dict, list)):
        raise ProblemError(f"id is a {type(raw_id).__name__}, expected a string or number")
    answer = reference_answer(row, answer_field)
    return {
        "id": check_unicode(str(raw_id), "the id"),
        "problem": check_unicode(text, "the problem text"),
        "answer": None if answer is None else check_unicode(answer, "the reference answer"),
    }


@dataclass(frozen=True)
class Shard:
    """Share ``index`` of ``count`` of a dataset (``"I/N"``, 0 <= I < N): the problems whose id hashes to I.

    The hash is blake2b of the normalised id (``normalise_row``), so a problem's shard depends on
    its id alone: not on line order, on the other problems, on how many are done, on the machine or
    on Python's per-process ``hash`` salt. The N shares are disjoint and together are the dataset.
    """

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ConfigError(f"shard {self}: the number of shards N must be at least 1")
        if not 0 <= self.index < self.count:
            raise ConfigError(
                f"shard {self}: I must be in 0..{self.count - 1} (shards are numbered from 0: 0/{self.count} "
                f"to {self.count - 1}/{self.count})"
            )

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"I/N"`` -> Shard; ConfigError saying what is expected otherwise."""
        match = re.fullmatch(r"\s*([0-9]+)\s*/\s*([0-9]+)\s*", text)
        if match is None:
            raise ConfigError(f"shard {text!r}: expected I/N, two whole numbers with 0 <= I < N, e.g. 0/4")
        return cls(int(match[1]), int(match[2]))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, problem_id: str) -> bool:
        """Whether problem ``problem_id`` is in this shard."""
        digest = hashlib.blake2b(problem_id.encode("utf-8"), digest_size=8).digest()
        return int.from_bytes(digest, "big") % self.count == self.index


class _Unparsable(str):
    """In place of a row: why its source could not be parsed (the issue text after "<where>: ")."""


def _collect(
    rows: Iterable[tuple[int, str, Any]],
    *,
    limit: int | None,
    question_field: str | None,
    answer_field: str | None,
    id_field: str | None,
    seen_word: str,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Normalise ``(index, where, row)`` items: ``index`` is the default id, ``where`` names the row
    in issues ("line 3"), a ``_Unparsable`` row is reported as is. Duplicate ids after the first
    are skipped as "duplicate id 'x' (first seen <seen_word> <where>)". Stops at ``limit`` problems."""
    problems: list[dict[str, Any]] = []
    issues: list[str] = []
    first_seen: dict[str, str] = {}
    for index, where, row in rows:
        if limit is not None and len(problems) >= limit:
            break
        if isinstance(row, _Unparsable):
            issues.append(f"{where}: {row}")
            continue
        try:
            problem = normalise_row(
                row, index, question_field=question_field, answer_field=answer_field, id_field=id_field
            )
        except ProblemError as exc:
            issues.append(f"{where}: {exc}")
            continue
        if problem["id"] in first_seen:
            first = first_seen[problem["id"]]
            issues.append(f"{where}: duplicate id {problem['id']!r} (first seen {seen_word} {first})")
            continue
        first_seen[problem["id"]] = where
        problems.append(problem)
    return problems, issues


def normalise_rows(
    rows: Iterable[Any],
    *,
    limit: int | None = None,
    question_field: str | None = None,
    answer_field: str | None = None,
    id_field: str | None = None,
    label: str = "row",
) -> tuple[list[dict[str, Any]], list[str]]:
    """Normalise already-parsed rows (row i gets id ``str(i)`` unless it carries one); see ``load_problems``."""
    return _collect(
        ((index, f"{label} {index}", row) for index, row in enumerate(rows)),
        limit=limit,
        question_field=question_field,
        answer_field=answer_field,
        id_field=id_field,
        seen_word="at",
    )


def _json_lines(handle: Iterable[str]) -> Iterator[tuple[int, str, Any]]:
    """``(0-based index, "line N" (1-based), parsed row or _Unparsable)``; blank lines skipped."""
    for index, line in enumerate(handle):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            row = _Unparsable(f"not valid JSON: {exc}")
        yield index, f"line {index + 1}", row


def load_problems(
    path: str | os.PathLike[str],
    *,
    limit: int | None = None,
    question_field: str | None = None,
    answer_field: str | None = None,
    id_field: str | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Read a JSONL problem file into ``({"id", "problem", "answer"} dicts, human-readable issues)``.

    Each line is one JSON object. The problem text is ``problem`` (MATH) or ``question`` (GSM8K)
    unless ``question_field`` says otherwise; the reference is ``answer`` (GSM8K's ``#### N`` is
    reduced to N) or MATH's ``solution`` (its last ``\\boxed{}``), or ``answer_field``; rows
    without one get ``answer: None``. The id is the row's ``id``/``unique_id`` (or ``id_field``),
    else the 0-based line index, which stays stable across runs so resuming works. Bad lines
    (invalid JSON, missing or empty text, duplicate ids) are reported as "line N: ..." (1-based)
    and skipped; blank lines are ignored. ``limit`` caps the number of problems returned.
    """
    with Path(path).open(encoding="utf-8", errors="replace", newline="\n") as handle:  # JSONL: "\n" ends a line
        return _collect(
            _json_lines(handle),
            limit=limit,
            question_field=question_field,
            answer_field=answer_field,
            id_field=id_field,
            seen_word="on",
        )


def load_hf_dataset(
    name: str,
    split: str = "test",
    *,
    config: str | None = None,
    limit: int | None = None,
    question_field: str | None = None,
    answer_field: str | None = None,
    id_field: str | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Load a Hugging Face dataset split and normalise it like ``load_problems`` ("row N: ..." issues).

    Needs the optional ``datasets`` package; may download the dataset.
    """
    try:
        import datasets  # type: ignore[import-not-found]
    except ImportError as exc:
        raise ImportError(
            "load_hf_dataset needs the 'datasets' package (pip install datasets); "
            "or download the split as JSONL and use load_problems"
        ) from exc
    data = datasets.load_dataset(name, config, split=split)
    return normalise_rows(
        data, limit=limit, question_field=question_field, answer_field=answer_field, id_field=id_field
    )
