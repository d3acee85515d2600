"""Answer extraction, reference answers and answer equivalence (SPEC §7).

Equivalence is decided in two stages: a cheap string normalisation in the spirit of the MATH
evaluator (§7), then math-verify. math-verify's own timeouts use ``signal.alarm`` and so only work
in the main thread; we switch them off and run math-verify in worker *processes* instead, killing a
worker that overruns. That bounds every call, works from any thread and from ``asyncio.to_thread``,
and cannot leave a runaway sympy computation burning a core in the caller's process.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import math
import os
import queue
import re
import select
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

__all__ = [
    "MathVerifyPool",
    "answers_equivalent",
    "numeric_value",
    "extract_answer",
    "grade",
    "normalize_answer",
    "reference_answer",
    "shutdown_verifier",
]

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------------

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*")
_PHRASE_RE = re.compile(r"(?:the\s+(?:final\s+)?answer\s+is|final\s+answer\s+is)\s*:?", re.IGNORECASE)
_GSM_RE = re.compile(r"####\s*([^\n]*)")
_STEP_TAG = "ки"
_HOPE_RE = re.compile(r"\.?\s*I hope it is correct\.?\s*$", re.IGNORECASE)
# A thousands separator: a comma between a digit and exactly three digits.
_THOUSANDS_RE = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
# A sentence end: a period followed by whitespace (so "3.5" is not cut).
_SENTENCE_END_RE = re.compile(r"\.\s")


def _strip_thousands(answer: str) -> str:
    """Drop thousands separators ("1,000" -> "1000") unless the answer is a tuple, set or interval."""
    if any(ch in answer for ch in "()[]{}"):
        return answer
    return _THOUSANDS_RE.sub("", answer)


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
    tag = rest.find(_STEP_TAG)
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
            return _THOUSANDS_RE.sub("", tail) or None
        if key == "solution":
            return extract_answer(value)
        value = value.strip()
        return value or None
    return None


# --------------------------------------------------------------------------------------------------
# String normalisation (cheap first stage)
# --------------------------------------------------------------------------------------------------

_TEXT_UNIT_RE = re.compile(r"\\(?:text|textbf|mbox|mathrm)\{\s*[a-zA-Z][a-zA-Z .]*\}$")
_TEXT_WRAP_RE = re.compile(r"\\(?:text|textbf|mbox|mathrm)\{([^{}]*)\}")
_FRAC_SHORT_RE = re.compile(r"\\frac(?![a-zA-Z])\s*(\{[^{}]*\}|[0-9a-zA-Z])\s*(\{[^{}]*\}|[0-9a-zA-Z])")
_SQRT_SHORT_RE = re.compile(r"\\sqrt(?![a-zA-Z])\s*([0-9a-zA-Z])")
_SLASH_FRAC_RE = re.compile(r"^(-?\d+)/(\d+)$")
_LHS_RE = re.compile(r"^[a-zA-Z]\w{0,2}\s*=\s*(?!=)")
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


# --------------------------------------------------------------------------------------------------
# Numeric readings: GSM8K-style answers are one number, often decorated ("4 glasses", "$1,250.")
# --------------------------------------------------------------------------------------------------

_NUMBER_RE = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+)?(?![\w,]*\.?\d)(?!\w)")
_NUMERIC_NOISE_RE = re.compile(r"[$€£%]|\\\$|\\%|\\!|\\,")
_OPERATOR_RE = re.compile(r"[+*=^<>\\{}]|\d\s*-\s*\d|\d\s*[x×]\s*\d")


def _number(token: str) -> Fraction:
    token = token.replace(",", "").replace(" ", "")
    if "/" in token:
        num, den = token.split("/")
        return Fraction(int(num), int(den)) if int(den) else Fraction(math.inf)
    return Fraction(token)


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
    numbers = _NUMBER_RE.findall(text)
    if len(numbers) != 1:
        return None
    try:
        value = _number(numbers[0])
    except (ValueError, ZeroDivisionError):
        return None
    return None if value.denominator == 0 else value


def _last_number(text: str) -> Fraction | None:
    """The last plain number of a text (GSM8K graders' "flexible" read-out), or None."""
    found = _NUMBER_RE.findall(_NUMERIC_NOISE_RE.sub("", text))
    try:
        return _number(found[-1]) if found else None
    except (ValueError, ZeroDivisionError):
        return None


# --------------------------------------------------------------------------------------------------
# math-verify in worker processes, bounded by a timeout
# --------------------------------------------------------------------------------------------------

# The worker is a self-contained script (not an import of ets_async), so starting one never loads
# the package, torch or vllm. Protocol: one JSON line per request ["gold", "pred"], one per reply.
_WORKER_SCRIPT = r"""
import json, logging, sys
logging.disable(logging.WARNING)
from math_verify import parse, verify

def _wrap(s):
    s = s.strip()
    if s.startswith("$") and s.endswith("$") and len(s) > 1:
        return s
    return "$" + s + "$"

parse(_wrap("1"), parsing_timeout=None)
sys.stdout.write('{"ready": true}\n')
sys.stdout.flush()
for line in sys.stdin:
    try:
        gold, pred = json.loads(line)
        ok = verify(parse(_wrap(gold), parsing_timeout=None), parse(_wrap(pred), parsing_timeout=None),
                    timeout_seconds=None)
        reply = {"eq": bool(ok)}
    except Exception as exc:  # math-verify normally swallows its errors; be safe anyway
        reply = {"eq": False, "error": type(exc).__name__ + ": " + str(exc)[:200]}
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()
"""


class _Worker:
    """One worker process and its pipes. Used by one thread at a time."""

    def __init__(self, command: list[str], start_timeout_s: float) -> None:
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        if self._read_line(start_timeout_s) is None:
            self.kill()
            raise RuntimeError(
                "math-verify worker did not start; is math-verify installed in "
                f"{command[0]!r}? (pip install math-verify)"
            )

    def _read_line(self, timeout_s: float) -> str | None:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], max(timeout_s, 0.0))
        if not ready:
            return None
        line = self.proc.stdout.readline()
        return line or None

    def ask(self, gold: str, pred: str, timeout_s: float) -> dict[str, Any] | None:
        """The worker's reply, or None on timeout or a dead worker (the caller then kills it)."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps([gold, pred]) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return None
        line = self._read_line(timeout_s)
        if line is None:
            return None
        try:
            reply = json.loads(line)
        except ValueError:
            return None
        return reply if isinstance(reply, dict) else None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass

    def close(self) -> None:
        """Ask the worker to exit (EOF on stdin); kill it if it does not within a second."""
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc.wait(timeout=1.0)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()


class MathVerifyPool:
    """A fixed number of math-verify worker processes shared by all threads.

    ``equivalent`` blocks until a worker is free, then waits at most ``timeout_s`` for its answer;
    a worker that overruns is killed and replaced lazily, so the pool never shrinks. Time spent
    waiting for a free worker is not counted in the timeout (a busy pool must not turn correct
    answers into timeouts); it is bounded by the timeouts of the calls ahead in the queue.
    """

    def __init__(
        self,
        size: int | None = None,
        *,
        command: list[str] | None = None,
        start_timeout_s: float = 120.0,
    ) -> None:
        self.size = size if size is not None else max(1, min(2, os.cpu_count() or 1))
        self.command = command if command is not None else [sys.executable, "-c", _WORKER_SCRIPT]
        self.start_timeout_s = start_timeout_s
        self.timeouts = 0
        self._idle: queue.SimpleQueue[_Worker | None] = queue.SimpleQueue()
        for _ in range(self.size):
            self._idle.put(None)  # a slot whose worker is started on first use
        self._workers: set[_Worker] = set()
        self._lock = threading.Lock()
        self._closed = False

    def equivalent(self, gold: str, pred: str, timeout_s: float) -> bool | None:
        """math-verify's verdict, or None if it did not answer within ``timeout_s``."""
        if self._closed:
            raise RuntimeError("MathVerifyPool is closed")
        worker = self._idle.get()
        try:
            if worker is None:
                worker = _Worker(self.command, self.start_timeout_s)
                with self._lock:
                    self._workers.add(worker)
            reply = worker.ask(gold, pred, timeout_s)
            if reply is None:
                with self._lock:
                    self.timeouts += 1
                    self._workers.discard(worker)
                worker.kill()
                worker = None
                return None
            if "error" in reply:
                logger.debug("math-verify error on %r vs %r: %s", gold, pred, reply["error"])
            return bool(reply.get("eq", False))
        finally:
            self._idle.put(worker)

    def close(self) -> None:
        """Stop every worker. Calls made afterwards raise RuntimeError."""
        self._closed = True
        with self._lock:
            workers, self._workers = list(self._workers), set()
        for worker in workers:
            worker.close()


_pool: MathVerifyPool | None = None
_pool_lock = threading.Lock()


def _get_pool() -> MathVerifyPool:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = MathVerifyPool()
        return _pool


def shutdown_verifier() -> None:
    """Stop the shared math-verify workers (also done at interpreter exit)."""
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.close()


atexit.register(shutdown_verifier)


@functools.lru_cache(maxsize=65536)
def _verify_cached(gold: str, pred: str, timeout_s: float) -> bool:
    started = time.monotonic()
    verdict = _get_pool().equivalent(gold, pred, timeout_s)
    if verdict is None:
        logger.warning(
            "math-verify timed out after %.1fs on %r vs %r; counted as not equivalent",
            time.monotonic() - started,
            gold[:200],
            pred[:200],
        )
        return False
    return verdict


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
    return _verify_cached(a.strip(), b.strip(), float(timeout_s))


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
        return _last_number(predicted) == gold
    return answers_equivalent(reference, predicted, timeout_s=timeout_s)
