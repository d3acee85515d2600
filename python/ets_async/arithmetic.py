"""Exact checking of the arithmetic a reasoning step states: every chain ``a op b = c (= d ...)``.

Small policies fail mostly at arithmetic, and arithmetic can be checked without a model: the text is
normalised (LaTeX and Unicode operators, ``\\frac{a}{b}``, thousands separators, currency, percent),
each maximal chain of arithmetic expressions joined by ``=`` is found, and every adjacent pair of
sides is evaluated with exact rational arithmetic. A side that states a rounded decimal (``10 / 3 =
3.33``) is right if it agrees up to the digits it shows. Words end a side: in ``16 eggs - 3 eggs =
13`` the left side is cut by words, so nothing is claimed; a side that starts with an operator right
after a word is such a fragment and is not checked.
"""

from __future__ import annotations

import ast
import itertools
import math
import re
from dataclasses import dataclass
from fractions import Fraction

from .answers import without_thousands_separators

__all__ = ["ArithmeticCheck", "check_arithmetic"]

_LATEX_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_REPLACEMENTS = (
    ("\\times", "*"), ("\\cdot", "*"), ("×", "*"), ("·", "*"), ("∗", "*"), ("\\div", "/"), ("÷", "/"),
    ("−", "-"), ("–", "-"), ("\\left", ""), ("\\right", ""), ("\\$", ""), ("$", ""), ("\\,", ""), ("\\!", ""),
    ("\\(", " "), ("\\)", " "), ("\\[", " "), ("\\]", " "), ("{", "("), ("}", ")"), ("^", "**"), ("\\%", "%"),
)  # fmt: skip
_LETTER_TIMES = re.compile(r"(?<=[\d)])\s*[xX]\s*(?=[\d(])")  # "3 x 4" means 3 * 4
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*%")
# One side: numbers, operators, parentheses and spaces, starting and ending with a number or a parenthesis.
_SIDE = r"[-+(]*\s*\d[\d.\s+\-*/()]*"
_CHAIN = re.compile(rf"(?<![\w.])({_SIDE}(?:=\s*{_SIDE})+)")
_MAX_POWER = 64


@dataclass(frozen=True)
class ArithmeticCheck:
    """What a text states: ``claims`` checkable ``left = right`` pairs, of which ``wrong`` are false."""

    claims: int
    wrong: int

    @property
    def all_right(self) -> bool:
        return self.wrong == 0


def _normalise(text: str) -> str:
    for _ in range(3):  # nested fractions
        text = _LATEX_FRAC.sub(r"((\1)/(\2))", text)
    for old, new in _REPLACEMENTS:
        text = text.replace(old, new)
    text = without_thousands_separators(text)
    text = _LETTER_TIMES.sub("*", text)
    return _PERCENT.sub(r"(\1/100)", text)


def _evaluate(node: ast.expr) -> Fraction:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return Fraction(str(node.value))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        value = _evaluate(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp):
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Add):
            return left + right
        if isinstance(node.op, ast.Sub):
            return left - right
        if isinstance(node.op, ast.Mult):
            return left * right
        if isinstance(node.op, ast.Div):
            return left / right  # ZeroDivisionError: not checkable
        if isinstance(node.op, ast.Pow) and right.denominator == 1 and abs(right) <= _MAX_POWER:
            return left ** int(right)
    raise ValueError("not plain arithmetic")


def _value(side: str) -> tuple[Fraction, int | None] | None:
    """The exact value of one side, and its decimal places if it is a bare decimal number."""
    side = side.strip()
    if not side or side.count("(") != side.count(")"):
        return None
    try:
        value = _evaluate(ast.parse(side, mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError, RecursionError, OverflowError):
        return None
    bare = re.fullmatch(r"-?\d+\.(\d+)", side)
    return value, (len(bare.group(1)) if bare else None)


def _agree(a: tuple[Fraction, int | None], b: tuple[Fraction, int | None]) -> bool:
    """Equal, or a bare decimal side that is the other side rounded or truncated to its digits."""
    if a[0] == b[0]:
        return True
    for (shown, places), (exact, _) in ((a, b), (b, a)):
        if places is not None:
            scaled, target = exact * 10**places, shown * 10**places
            if target in (math.floor(scaled + Fraction(1, 2)), math.trunc(scaled)):
                return True
    return False


def check_arithmetic(text: str) -> ArithmeticCheck:
    """Count the checkable equalities in ``text`` and the false ones among them.

    A chain ``a = b = c`` gives the claims ``a = b`` and ``b = c``. A chain of bare numbers only
    states nothing computed and is skipped (``Step 1 = 1`` style noise).
    """
    claims = wrong = 0
    text = _normalise(text)
    for match in _CHAIN.finditer(text):
        raw = match.group(1).split("=")
        sides = [_value(s) for s in raw]
        if _is_fragment(text, match.start(1)):
            sides[0] = None
        if all(_is_number(side) for side, value in zip(raw, sides, strict=True) if value is not None):
            continue
        for a, b in itertools.pairwise(sides):
            if a is None or b is None:
                continue
            claims += 1
            wrong += not _agree(a, b)
    return ArithmeticCheck(claims, wrong)


def _is_fragment(text: str, start: int) -> bool:
    """A side starting with an operator whose left operand is a word ("eggs - 3")."""
    if text[start] not in "+-":
        return False
    before = text[:start].rstrip()
    return bool(before) and (before[-1].isalnum() or before[-1] == ")")


def _is_number(side: str) -> bool:
    return re.fullmatch(r"\s*[-+]?\d+(?:\.\d+)?\s*", side) is not None
