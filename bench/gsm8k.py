"""The GSM8K subset the benchmarks read (``../shared/data``), and its reference solutions as step texts."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k_test_1000.jsonl"


def read_rows(path: Path, limit: int) -> list[dict[str, Any]]:
    """The first ``limit`` rows of a GSM8K JSON-lines file as they are (question, answer with its solution)."""
    return [json.loads(line) for line in path.read_text().splitlines()[:limit]]


def solution_lines(rows: Iterable[dict[str, Any]]) -> list[str]:
    """The reasoning lines of GSM8K reference solutions: step-sized texts like a policy's steps, so
    without the calculator annotations ("<<16-3-4=9>>") that policy steps lack and the final "#### 18"."""
    return [re.sub(r"<<[^>]*>>", "", line).strip() for row in rows for line in row["answer"].splitlines()[:-1]]
