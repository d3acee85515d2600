"""Answer extraction, reference answers, equivalence and the bounded math-verify workers."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time

import pytest

from ets_async import grading
from ets_async.grading import (
    MathVerifyPool,
    answers_equivalent,
    extract_answer,
    grade,
    normalize_answer,
    reference_answer,
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
    ("a", "b"),
    [
        ("1/2", r"\frac{1}{2}"),
        ("0.5", r"\frac12"),
        (r"\$18", "18"),
        ("18.0", "18"),
        (r"90^\circ", "90"),
        (r"5\text{ cm}", "5"),
        (r"\left( 1, 2 \right)", "(1,2)"),
        (r"\dfrac{3}{4}", r"\frac{3}{4}"),
        ("x = 5", "5"),
        ("1,000", "1000"),
    ],
)
def test_normalisation_alone_decides(a: str, b: str) -> None:
    assert normalize_answer(a) == normalize_answer(b)
    assert answers_equivalent(a, b)


def test_different_numbers_are_not_equivalent() -> None:
    pytest.importorskip("math_verify")
    assert not answers_equivalent("3", "4")
    assert grade("3", "4") is False


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (r"\frac{\sqrt{2}}{2}", r"\sqrt{2}/2"),
        ("(x+1)^2", "x^2+2x+1"),
        (r"\{1,2\}", r"\{2,1\}"),
    ],
)
def test_math_verify_decides(a: str, b: str) -> None:
    pytest.importorskip("math_verify")
    assert normalize_answer(a) != normalize_answer(b)
    assert answers_equivalent(a, b)


def test_grade() -> None:
    assert grade("0.5", None) is None
    assert grade(None, "1") is False
    assert grade(r"\frac12", "0.5") is True


def test_equivalence_from_many_threads_and_asyncio() -> None:
    pytest.importorskip("math_verify")
    pairs = [(r"\sqrt{8}", r"2\sqrt{2}", True), ("7", "8", False), (r"\pi/2", r"\frac{\pi}{2}", True)]
    results: list[tuple[bool, bool]] = []
    lock = threading.Lock()

    def work(a: str, b: str, want: bool) -> None:
        got = answers_equivalent(a, b)
        with lock:
            results.append((got, want))

    threads = [threading.Thread(target=work, args=pair) for pair in pairs * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 9 and all(got == want for got, want in results)

    async def main() -> list[bool]:
        return await asyncio.gather(*(asyncio.to_thread(answers_equivalent, a, b) for a, b, _ in pairs))

    assert asyncio.run(main()) == [want for _, _, want in pairs]


# A stand-in for math-verify that never answers: it reports ready, then hangs on every request.
_HANGING_WORKER = r"""
import sys, time
sys.stdout.write('{"ready": true}\n'); sys.stdout.flush()
for line in sys.stdin:
    time.sleep(3600)
"""

# A slow but eventually answering stand-in: says "equivalent" after 0.2 s.
_SLOW_WORKER = r"""
import sys, time
sys.stdout.write('{"ready": true}\n'); sys.stdout.flush()
for line in sys.stdin:
    time.sleep(0.2)
    sys.stdout.write('{"eq": true}\n'); sys.stdout.flush()
"""


@pytest.fixture
def fake_pool(monkeypatch: pytest.MonkeyPatch):
    """Install a MathVerifyPool running a given worker script as the shared pool."""
    pools: list[MathVerifyPool] = []

    def install(script: str, size: int = 1) -> MathVerifyPool:
        pool = MathVerifyPool(size, command=[sys.executable, "-c", script], start_timeout_s=30)
        pools.append(pool)
        monkeypatch.setattr(grading, "_pool", pool)
        grading._verify_cached.cache_clear()
        return pool

    yield install
    for pool in pools:
        pool.close()
    grading._verify_cached.cache_clear()


def test_timeout_counts_as_not_equivalent(fake_pool, caplog: pytest.LogCaptureFixture) -> None:
    pool = fake_pool(_HANGING_WORKER)
    caplog.set_level(logging.WARNING, logger="ets_async.grading")
    started = time.monotonic()
    assert answers_equivalent("x+1", "y", timeout_s=0.5) is False
    elapsed = time.monotonic() - started
    assert elapsed < 0.5 + 3.0  # the timeout plus worker start-up; never the hour the worker sleeps
    assert pool.timeouts == 1
    assert any("timed out" in record.message for record in caplog.records)


def test_timeout_kills_the_stuck_worker_and_the_pool_recovers(fake_pool) -> None:
    pool = fake_pool(_HANGING_WORKER)
    assert pool.equivalent("a", "b", 0.3) is None
    assert not pool._workers  # the stuck worker was killed and dropped
    assert pool.equivalent("a", "b", 0.3) is None  # a fresh worker took its slot
    assert pool.timeouts == 2


def test_timeout_off_the_main_thread(fake_pool) -> None:
    fake_pool(_HANGING_WORKER)

    async def main() -> list[bool]:
        calls = [asyncio.to_thread(answers_equivalent, f"a{i}", "b", timeout_s=0.3) for i in range(3)]
        return await asyncio.gather(*calls)

    started = time.monotonic()
    assert asyncio.run(main()) == [False, False, False]
    # One worker, three queued calls: bounded by 3 timeouts plus 3 worker starts.
    assert time.monotonic() - started < 3 * (0.3 + 3.0)


def test_slow_answer_within_the_timeout_is_used(fake_pool) -> None:
    pool = fake_pool(_SLOW_WORKER)
    assert answers_equivalent("p", "q", timeout_s=5.0) is True
    assert pool.timeouts == 0


def test_worker_that_cannot_start_raises_clearly() -> None:
    pool = MathVerifyPool(1, command=[sys.executable, "-c", "raise SystemExit(1)"], start_timeout_s=10)
    with pytest.raises(RuntimeError, match="math-verify"):
        pool.equivalent("1", "2", 1.0)
    pool.close()


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
    value = grading.numeric_value(answer)
    assert (value is None) if expected is None else value == pytest.approx(expected)


@pytest.mark.parametrize(
    ("predicted", "reference", "expected"),
    [
        ("4 glasses", "4", True),
        ("$1,250.", "1250", True),
        ("x = 4", "4", True),
        ("8 apples + 5 = 13", "13", True),  # several numbers: a GSM8K reference compares the last one
        ("8 apples + 5 = 13", "8", False),
        ("1/2", "2", False),  # a fraction is one number
        ("5 glasses", "4", False),
        ("2X'", "8", False),
    ],
)
def test_grade_against_gsm8k_references(predicted: str, reference: str, expected: bool) -> None:
    assert grade(predicted, reference) is expected


def test_numeric_answers_vote_together() -> None:
    assert answers_equivalent("4 glasses", "4") and answers_equivalent("$18", "18 dollars")
    assert not answers_equivalent("4 glasses", "5 glasses")
