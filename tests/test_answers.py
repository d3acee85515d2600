"""Answers as text: extraction, reference answers, normalisation and the number reader."""

from __future__ import annotations

from fractions import Fraction

import pytest
from ets_async.answers import (
    SHEPHERD_STEP_TAG,
    extract_answer,
    normalize_answer,
    numeric_value,
    read_numbers,
    reference_answer,
    without_thousands_separators,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"So the value is \boxed{\frac{1}{\sqrt{2}}}.", r"\frac{1}{\sqrt{2}}"),
        (r"First \boxed{3}, corrected: \boxed{\left\{1, 2\right\}}", r"\left\{1, 2\right\}"),
        (r"\boxed{a^{2}+\frac{b}{c_{1}}} and", r"a^{2}+\frac{b}{c_{1}}"),
        (r"last box is unclosed: \boxed{7} then \boxed{8", "7"),
        (r"\boxed 5$", "5"),
        ("Step 3: add them. ки\nThe answer is: 42 ки", "42"),
        ("The answer is: 1,234 ки", "1234"),
        (r"Therefore, the final answer is: $\boxed{18}$. I hope it is correct.", "18"),
        (r"Therefore, the final answer is: $\frac{3}{4}$. I hope it is correct.", r"\frac{3}{4}"),
        ("The answer is 3.5. Then we stop.", "3.5"),
        ("The answer is: 7\nThe answer is: 9", "9"),
        ("Natalia sold 48/2 = 24 clips.\n#### 1,234", "1234"),
        ("no final answer here", None),
        ("", None),
        (r"\boxed{(1,000, 2)}", "(1,000, 2)"),  # commas inside tuples are kept
    ],
)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"problem": "p", "answer": r"\frac{1}{2}"}, r"\frac{1}{2}"),
        ({"question": "q", "answer": "She has 2 + 3 = 5.\n#### 1,005"}, "1005"),
        ({"problem": "p", "solution": r"so $\boxed{\dfrac{2}{3}}$."}, r"\dfrac{2}{3}"),
        ({"problem": "p", "answer": 12}, "12"),
        ({"problem": "p"}, None),
        ({"problem": "p", "answer": "  "}, None),
    ],
)
def test_reference_answer(record: dict, expected: str | None) -> None:
    assert reference_answer(record) == expected


def test_reference_answer_explicit_field() -> None:
    assert reference_answer({"answer": "wrong", "target": "#### 7"}, "target") == "7"


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("4 glasses", 4),
        ("$1,250.", 1250),
        ("x = 4", 4),
        ("18 dollars per day", 18),
        ("-5", -5),
        ("12.50", 12.5),
        ("3/4", 0.75),
        ("3 + 5", None),  # computes something
        ("2 1/2", None),  # two numbers
        (r"\frac{1}{2}", None),  # LaTeX goes to math-verify
        ("2X'", None),  # a number glued to letters is not a reading
        ("no number", None),
    ],
)
def test_numeric_value(answer: str, expected: float | None) -> None:
    value = numeric_value(answer)
    assert (value is None) if expected is None else value == pytest.approx(expected)


def test_a_zero_denominator_is_no_number() -> None:
    assert numeric_value("3/0") is None
    assert read_numbers("5 apples, then 3/0") == [Fraction(5)]


def test_read_numbers() -> None:
    assert read_numbers("Pay $1,250.50 for 3 items, 1/4 of them red.") == [
        Fraction("1250.5"),
        Fraction(3),
        Fraction(1, 4),
    ]
    assert read_numbers("2X and x2 are not plain numbers") == []
    assert read_numbers("") == []


def test_thousands_separators() -> None:
    assert (
        without_thousands_separators("1,000 and 12,345,678 but not 1,00 or 1,0000")
        == "1000 and 12345678 but not 1,00 or 1,0000"
    )
    assert normalize_answer("1,000") == "1000" and normalize_answer("(1,000,2)") == "(1,000,2)"


def test_shepherd_step_tag_ends_a_phrase_answer() -> None:
    assert extract_answer(f"The answer is: 42 {SHEPHERD_STEP_TAG}\n") == "42"
