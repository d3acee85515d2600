"""The model-free scorers: exact arithmetic checks and the policy's own confidence."""

from __future__ import annotations

import asyncio
import math

import pytest
from ets_async import SearchConfig, solve_many
from ets_async.arithmetic import check_arithmetic
from ets_async.backends import ScoreRequest
from ets_async.backends.confidence_prm import ArithmeticCheckedPRM, ConfidencePRM, step_confidence
from ets_async.errors import BackendError
from ets_async.testing import FakeEmbedder, FakePolicy, FakePRM


@pytest.mark.parametrize(
    ("text", "claims", "wrong"),
    [
        ("So she has 16 - 3 - 4 = 9 eggs.", 1, 0),
        ("She makes 9 * 2 = $18 every day.", 1, 0),
        (r"\( 3 \times 4 = 13 \)", 1, 1),
        (r"\frac{1}{2} \times 10 = 5", 1, 0),
        ("1,250 + 250 = 1,500", 1, 0),
        ("$2 × 9 = $18", 1, 0),
        ("3 x 4 = 12 and 5 + 5 = 11", 2, 1),
        ("x = 5 + 3 = 8", 1, 0),
        ("2 + 2 = 4 = 5", 2, 1),  # a chain: 2 + 2 = 4 right, 4 = 5 wrong (two bare numbers are still a link)
        ("10 / 3 = 3.33", 1, 0),  # rounded to the digits shown
        ("2 / 3 = 0.66", 1, 0),  # truncated
        ("10 / 3 = 3.4", 1, 1),
        ("7 / 2 = 3", 1, 1),
        ("16 eggs - 3 eggs = 13", 0, 0),  # words cut the left side: nothing checkable
        ("6 dollars * 4 = 24", 0, 0),  # "* 4" continues a word, not an expression
        ("20% of 50 = 10", 0, 0),
        ("Step 1 = 1", 0, 0),  # two bare numbers state nothing computed
        ("1 / 0 = 5", 0, 0),
        ("no arithmetic here", 0, 0),
    ],
)
def test_check_arithmetic(text: str, claims: int, wrong: int) -> None:
    check = check_arithmetic(text)
    assert (check.claims, check.wrong) == (claims, wrong)


def test_step_confidence() -> None:
    assert step_confidence([]) == 1.0
    assert step_confidence([math.log(0.5)] * 4) == pytest.approx(0.5)
    # the mean hides one bad stretch; the lowest 2-token window finds it
    logprobs = [0.0] * 8 + [math.log(0.1), math.log(0.1)]
    assert step_confidence(logprobs, "mean") == pytest.approx(0.1 ** (2 / 10))
    assert step_confidence(logprobs, "lowest_window", window=2) == pytest.approx(0.1)


def request(step: str, logprobs: tuple[float, ...] | None) -> ScoreRequest:
    return ScoreRequest((1, 2, 3), "p", ("first\n\n", step), step_logprobs=logprobs)


def test_confidence_and_arithmetic_prms() -> None:
    sure, unsure = (math.log(0.9),) * 3, (math.log(0.3),) * 3
    confidence = ConfidencePRM()  # 3 tokens: shorter than a window, so the whole step's geometric mean
    scores = asyncio.run(confidence.score([request("2 + 2 = 4", sure), request("2 + 2 = 4", unsure)]))
    assert scores == pytest.approx([0.9, 0.3])
    checked = ArithmeticCheckedPRM(confidence, penalty=0.1)
    assert checked.needs_step_logprobs
    scores = asyncio.run(checked.score([request("2 + 2 = 4", sure), request("2 + 2 = 5", sure)]))
    assert scores == pytest.approx([0.9, 0.09])
    alone = ArithmeticCheckedPRM(penalty=0.1)
    scores = asyncio.run(
        alone.score([request("2 + 2 = 4", None), request("no numbers", None), request("2 + 2 = 5", None)])
    )
    assert scores == [1.0, 0.5, 0.1]
    with pytest.raises(BackendError, match="log-probabilities"):
        asyncio.run(confidence.score([request("2 + 2 = 4", None)]))


def test_the_search_asks_the_policy_for_logprobs_only_when_the_prm_reads_them() -> None:
    config = SearchConfig(method="rebase", width=4, max_depth=4, max_step_tokens=32, max_tokens=128)
    policy = FakePolicy()
    results = asyncio.run(
        solve_many(["What is 1 + 1?"], config, policy=policy, prm=ConfidencePRM(), embedder=FakeEmbedder())
    )
    assert results[0].error is None
    scores = [s for c in results[0].candidates for s in c.step_scores]
    assert scores and all(0.0 < s <= 1.0 for s in scores) and len(set(scores)) > 1
    # a PRM that does not read them: the policy returns none, and the search works as before
    results = asyncio.run(solve_many(["What is 1 + 1?"], config, policy=policy, prm=FakePRM(), embedder=FakeEmbedder()))
    assert results[0].error is None
