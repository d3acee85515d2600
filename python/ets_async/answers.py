"""Answers as text (SPEC §7): extracting a solution's final answer, a dataset row's reference answer,
the cheap normalisation that decides most equivalences, and reading numbers out of text.

Pure string work: no model, no subprocess. Deciding equivalence beyond these strings (math-verify) is
``grading``'s.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

__all__ = [
    "NUMBER_PATTERN",
    "SHEPHERD_STEP_TAG",
    "extract_answer",
    "normalize_answer",
    "numeric_value",
    "read_number",
    "read_numbers",
    "reference_answer",
    "without_thousands_separators",
]

SHEPHERD_STEP_TAG = "ки"
"""Math-Shepherd's step tag: its PRM reads a verdict at each tag, and its solutions end steps with it."""

# --------------------------------------------------------------------------------------------------
# Numbers: GSM8K-style answers are one number, often decorated ("4 glasses", "$1,250.")
# --------------------------------------------------------------------------------------------------

# A thousands separator: a comma between a digit and exactly three digits.
_THOUSANDS_RE = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")

NUMBER_PATTERN = r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+)?(?![\w,]*\.?\d)(?!\w)"
"""One plain number (no capturing group): a sign, digits with or without thousands separators, decimals,
an optional ``/ d`` denominator; not glued to letters ("2X") or to other digits ("1,2,3")."""

_NUMBER_RE = re.compile(NUMBER_PATTERN)
_NUMERIC_NOISE_RE = re.compile(r"[$€£%]|\\\$|\\%|\\!|\\,")
_OPERATOR_RE = re.compile(r"[+*=^<>\\{}]|\d\s*-\s*\d|\d\s*[x×]\s*\d")
_LHS_RE = re.compile(r"^[a-zA-Z]\w{0,2}\s*=\s*(?!=)")


def without_thousands_separators(text: str) -> str:
    """``text`` with every thousands separator removed ("1,000" -> "1000"; "1,00" and "1,0000" stay)."""
    return _THOUSANDS_RE.sub("", text)


def read_number(token: str) -> Fraction | None:
    """The value of a token matched by ``NUMBER_PATTERN``; None for a zero denominator."""
    token = token.replace(",", "").replace(" ", "")
    num, _, den = token.partition("/")
    try:
        return Fraction(int(num), int(den)) if den else Fraction(num)
    except (ValueError, ZeroDivisionError):
        return None


def read_numbers(text: str) -> list[Fraction]:
    """Every plain number of a text, in order; currency and percent signs are ignored ("$1,250" is 1250)."""
    tokens = _NUMBER_RE.findall(_NUMERIC_NOISE_RE.sub("", text))
    return [value for token in tokens if (value := read_number(token)) is not None]


def numeric_value(answer: str | None) -> Fraction | None:
    """The number an answer states when it states exactly one and computes nothing, else None.

    Currency and percent signs, thousands separators, units and other words, a trailing period and
    a short ``x =`` prefix are ignored: "4 glasses", "$1,250." and "x = 4" read as 4, 1250 and 4;
    "a/b" is one fraction. "3 + 5", "2 1/2", LaTeX and answers with two numbers have no reading.
    """
    if answer is None:
        return None
    text = _LHS_RE.sub("", _NUMERIC_NOISE_RE.sub("", answer.strip()))
    if _OPERATOR_RE.search(text):
        return None
    tokens = _NUMBER_RE.findall(text)
    return read_number(tokens[0]) if len(tokens) == 1 else None


# --------------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------------

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*")
_PHRASE_RE = re.compile(r"(?:the\s+(?:final\s+)?answer\s+is|final\s+answer\s+is)\s*:?", re.IGNORECASE)
_GSM_RE = re.compile(r"####\s*([^\n]*)")
_HOPE_RE = re.compile(r"\.?\s*I hope it is correct\.?\s*$", re.IGNORECASE)
# A sentence end: a period followed by whitespace (so "3.5" is not cut).
_SENTENCE_END_RE = re.compile(r"\.\s")


def _strip_thousands(answer: str) -> str:
    """Drop thousands separators unless the answer is a tuple, set or interval ("(1,000, 2)" stays)."""
    if any(ch in answer for ch in "()[]{}"):
        return answer
    return without_thousands_separators(answer)


def _balanced_group(text: str, open_at: int) -> str | None:
    """The content of the brace group opening at ``text[open_at] == "{"``, or None if unclosed."""
    depth = 0
    for i in range(open_at, len(text)):
        ch = text[i]
        if ch == "{" and (i == 0 or text[i - 1] != "\\"):
            depth += 1
        elif ch == "}" and (i == 0 or text[i - 1] != "\\"):
            depth -= 1
            if depth == 0:
                return text[open_at + 1 : i]
    return None


def _last_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}`` (or ``\\fbox{...}``, or ``\\boxed 5``)."""
    for match in reversed(list(_BOX_RE.finditer(text))):
        end = match.end()
        if end < len(text) and text[end] == "{":
            content = _balanced_group(text, end)
            if content is not None:
                return content
        elif match.group(0).endswith((" ", "\t")) and end < len(text):
            # "\boxed 5$": a single token up to whitespace or "$".
            token = re.match(r"[^\s$]+", text[end:])
            if token:
                return token.group(0)
    return None


def _clean_phrase_answer(rest: str) -> str:
    """Trim what follows "The answer is" down to the answer itself."""
    rest = rest.split("\n", 1)[0]
    tag = rest.find(SHEPHERD_STEP_TAG)
    if tag >= 0:
        rest = rest[:tag]
    rest = _HOPE_RE.sub("", rest.strip())
    end = _SENTENCE_END_RE.search(rest)
    if end:
        rest = rest[: end.start()]
    rest = rest.strip().strip("$").strip()
    rest = rest.rstrip(".").strip().strip("$").strip()
    return rest


def extract_answer(text: str) -> str | None:
    """The final answer of a solution text, or None if it states none.

    Order: the last complete ``\\boxed{...}`` (nested braces allowed); else the last "The answer
    is" / "The final answer is" / "final answer is:" phrase (rest of its line or sentence, without
    the step tag " ки", "I hope it is correct.", dollars and a trailing period); else GSM8K's
    ``#### N``. Thousands separators inside plain numbers are removed ("1,000" -> "1000").
    """
    if not text:
        return None
    boxed = _last_boxed(text)
    if boxed is not None:
        answer = boxed.strip()
        return _strip_thousands(answer) if answer else None
    phrases = list(_PHRASE_RE.finditer(text))
    for match in reversed(phrases):
        answer = _clean_phrase_answer(text[match.end() :])
        if answer:
            return _strip_thousands(answer)
    gsm = list(_GSM_RE.finditer(text))
    for match in reversed(gsm):
        answer = _clean_phrase_answer(match.group(1))
        if answer:
            return _strip_thousands(answer)
    return None


def reference_answer(record: Mapping[str, Any], field: str | None = None) -> str | None:
    """The gold answer of a dataset row, or None if it has none.

    MATH rows carry ``answer`` (used as is) or only ``solution`` (its last ``\\boxed{}``); GSM8K rows
    carry ``answer`` = rationale + ``#### N``, giving N without thousands separators. ``field``
    names the answer column explicitly.
    """
    keys = (field,) if field else ("answer", "solution")
    for key in keys:
        value = record.get(key)
        if value is None:
            continue
        if isinstance(value, bool):
            return str(value)
        if isinstance(value, (int, float)):
            return str(value)
        if not isinstance(value, str):
            return None
        if "####" in value:
            tail = value.rsplit("####", 1)[1].strip()
            return without_thousands_separators(tail) or None
        if key == "solution":
            return extract_answer(value)
        value = value.strip()
        return value or None
    return None


# --------------------------------------------------------------------------------------------------
# String normalisation (the cheap first stage of equivalence)
# --------------------------------------------------------------------------------------------------

_TEXT_UNIT_RE = re.compile(r"\\(?:text|textbf|mbox|mathrm)\{\s*[a-zA-Z][a-zA-Z .]*\}$")
_TEXT_WRAP_RE = re.compile(r"\\(?:text|textbf|mbox|mathrm)\{([^{}]*)\}")
_FRAC_SHORT_RE = re.compile(r"\\frac(?![a-zA-Z])\s*(\{[^{}]*\}|[0-9a-zA-Z])\s*(\{[^{}]*\}|[0-9a-zA-Z])")
_SQRT_SHORT_RE = re.compile(r"\\sqrt(?![a-zA-Z])\s*([0-9a-zA-Z])")
_SLASH_FRAC_RE = re.compile(r"^(-?\d+)/(\d+)$")
_TRAILING_ZERO_RE = re.compile(r"^(-?\d+)\.0+$")


def _brace(arg: str) -> str:
    return arg if arg.startswith("{") else "{" + arg + "}"


def normalize_answer(answer: str) -> str:
    """A canonical string for cheap equality (MATH-evaluator style normalisations, SPEC §7).

    Removes spaces, ``\\left``/``\\right``, ``\\!``, dollars, degree signs, percent signs, trailing
    ``\\text{...}`` units, thousands separators, a short ``x =`` prefix and a trailing ``.0``;
    rewrites ``\\dfrac``/``\\tfrac`` to ``\\frac``, ``\\frac12`` to ``\\frac{1}{2}``, ``a/b`` to
    ``\\frac{a}{b}`` for integers, and ``0.5`` to ``\\frac{1}{2}``.
    """
    s = answer.strip()
    s = s.replace("\n", "").replace("\\!", "").replace("\\,", "").replace("\\;", "").replace("\\ ", "")
    s = s.replace("\\\\", "\\")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "").replace("°", "")
    s = s.replace("\\$", "").replace("$", "")
    s = s.replace("\\%", "").replace("%", "")
    s = s.strip()
    s = _TEXT_UNIT_RE.sub("", s).strip() if not s.startswith("\\text") else s
    s = _TEXT_WRAP_RE.sub(r"\1", s)
    s = _LHS_RE.sub("", s)
    s = s.replace(" ", "")
    s = _strip_thousands(s)
    s = _SQRT_SHORT_RE.sub(lambda m: "\\sqrt{" + m.group(1) + "}", s)
    s = _FRAC_SHORT_RE.sub(lambda m: "\\frac" + _brace(m.group(1)) + _brace(m.group(2)), s)
    if s.startswith("."):
        s = "0" + s
    s = _TRAILING_ZERO_RE.sub(r"\1", s)
    if s == "0.5":
        s = "\\frac{1}{2}"
    slash = _SLASH_FRAC_RE.match(s)
    if slash:
        s = "\\frac{" + slash.group(1) + "}{" + slash.group(2) + "}"
    return s.rstrip(".")
