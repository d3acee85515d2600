"""Answer equivalence and grading (SPEC §7): cheap string and number comparisons first (``answers``),
then math-verify in bounded worker processes (``math_verify_pool``)."""

from __future__ import annotations

from .answers import normalize_answer, numeric_value, read_numbers
from .math_verify_pool import verify

__all__ = ["answers_equivalent", "grade"]


def answers_equivalent(a: str, b: str, *, timeout_s: float = 5.0) -> bool:
    """Whether two answers are mathematically the same; ``a`` plays the gold answer.

    Exact or normalised string equality first; then, when both answers read as one number
    (``numeric_value``), those numbers decide; otherwise math-verify, in a worker process bounded by
    ``timeout_s`` (a timeout counts as not equivalent and is logged). math-verify verdicts,
    timeouts included, are cached per (a, b, timeout_s), so a pathological pair stalls only once.
    Thread-safe; blocking, so call it through ``asyncio.to_thread`` from async code.
    """
    if a is None or b is None:
        return False
    if a == b:
        return True
    na, nb = normalize_answer(a), normalize_answer(b)
    if na == nb:
        return bool(na)
    if not na or not nb:
        return False
    va, vb = numeric_value(a), numeric_value(b)
    if va is not None and vb is not None:
        return va == vb
    return verify(a.strip(), b.strip(), float(timeout_s))


def grade(predicted: str | None, reference: str | None, *, timeout_s: float = 5.0) -> bool | None:
    """Whether ``predicted`` matches ``reference``: None without a reference, False without a prediction.

    A reference that is one number (GSM8K) is compared with the prediction's number: its only
    number, else its last plain number when it states several ("8 apples + 5 = 13" grades as 13);
    other references go through ``answers_equivalent``.
    """
    if reference is None:
        return None
    if predicted is None:
        return False
    gold = numeric_value(reference)
    if gold is not None and numeric_value(predicted) is None and "\\" not in predicted:
        numbers = read_numbers(predicted)
        return bool(numbers) and numbers[-1] == gold
    return answers_equivalent(reference, predicted, timeout_s=timeout_s)
