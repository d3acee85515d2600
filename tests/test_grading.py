"""Answer equivalence, grading and the bounded math-verify workers."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time

import pytest
from ets_async import math_verify_pool
from ets_async.answers import normalize_answer
from ets_async.grading import answers_equivalent, grade
from ets_async.math_verify_pool import MathVerifyPool


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
        monkeypatch.setattr(math_verify_pool, "_pool", pool)
        math_verify_pool.verify.cache_clear()
        return pool

    yield install
    for pool in pools:
        pool.close()
    math_verify_pool.verify.cache_clear()


def test_timeout_counts_as_not_equivalent(fake_pool, caplog: pytest.LogCaptureFixture) -> None:
    pool = fake_pool(_HANGING_WORKER)
    caplog.set_level(logging.WARNING, logger="ets_async.math_verify_pool")
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


def test_the_worker_file_runs_by_path() -> None:
    """The default worker is math_verify_worker.py run by path, without its folder on sys.path (this
    package's types.py would shadow the standard library's there)."""
    pytest.importorskip("math_verify")
    pool = MathVerifyPool(1, start_timeout_s=60)
    try:
        assert pool.command[-1].endswith("math_verify_worker.py")
        assert pool.equivalent(r"\sqrt{8}", r"2\sqrt{2}", 30.0) is True
        assert pool.equivalent("7", "8", 30.0) is False
    finally:
        pool.close()


def test_worker_that_cannot_start_raises_clearly() -> None:
    pool = MathVerifyPool(1, command=[sys.executable, "-c", "raise SystemExit(1)"], start_timeout_s=10)
    with pytest.raises(RuntimeError, match="math-verify"):
        pool.equivalent("1", "2", 1.0)
    pool.close()


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
