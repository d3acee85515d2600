"""Adaptive budgets (SPEC §3.4): the stop rule, its settings, and the shared loop stopping early on
scripted backends."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random

import pytest
from ets_async import METHODS, SearchConfig, report, solve_many
from ets_async.backends import Expansion
from ets_async.errors import ConfigError
from ets_async.stopping import leader_probability, settled
from ets_async.types import ProblemResult, Step
from scipy.stats import beta

from .fakes import FakeEmbedder, FakePolicy, FakePRM

PROBLEMS = ["What is 2 + 3?", {"question": "What is 7 - 4?", "answer": "3", "id": "q2"}, "What is 6 * 7?"]


class VotingPolicy(FakePolicy):
    """From depth 2 on, a step states an answer with probability 1/2 (drawn from the request's seed);
    the k-th answer stated is ``answers[k % len(answers)]``. ``root_seeds``: the seed of each root
    request (one per wave)."""

    def __init__(self, answers: list[str]) -> None:
        super().__init__()
        self.answers = answers
        self.answered = 0
        self.root_seeds: list[int] = []

    async def expand(self, prompt_token_ids, n, sampling):
        depth = bytes(prompt_token_ids).decode().count(sampling.stop)
        if depth == 0:
            self.root_seeds.append(sampling.seed)
        rng = random.Random(sampling.seed)
        steps = []
        for _ in range(n):
            if depth >= 1 and rng.random() < 0.5:
                text = f"The answer is: {self.answers[self.answered % len(self.answers)]}{sampling.stop}"
                self.answered += 1
            else:
                a = rng.randint(1, 8)
                text = f"{a} + 1 = {a + 1}{sampling.stop}"
            steps.append(Step(tuple(text.encode()), text, finished=False))
        return Expansion(steps, prompt_tokens=len(prompt_token_ids), cached_tokens=0)


def search(method: str, answers: list[str], **settings) -> ProblemResult:
    config = SearchConfig(method=method, width=16, max_step_tokens=32, max_tokens=512, max_depth=12, **settings)
    (result,) = asyncio.run(solve_many(["What is 6 * 7?"], config, policy=VotingPolicy(answers), prm=FakePRM(),
                                       embedder=FakeEmbedder()))  # fmt: skip
    assert result.error is None, result.error
    return result


SUPERMAJORITY = {"stop_when": "supermajority", "stop_share": 0.75, "stop_min_finished": 4}


def test_a_settled_problem_stops_after_its_first_wave():
    full = search("best_of_n", ["42"])
    early = search("best_of_n", ["42"], answer_selection="majority", wave_size=4, **SUPERMAJORITY)
    assert early.answer == full.answer == "42"
    assert (early.metrics.waves, early.metrics.stop_reason, early.metrics.finished) == (1, "settled", 4)
    assert (full.metrics.waves, full.metrics.stop_reason, full.metrics.finished) == (1, "complete", 16)
    assert early.metrics.generated_tokens < full.metrics.generated_tokens / 2


@pytest.mark.parametrize("rule", [SUPERMAJORITY, {"stop_when": "posterior", "stop_confidence": 0.9}])
def test_an_unsettled_problem_uses_the_whole_width_in_waves(rule):
    """Alternating answers: no prefix of them has a 3/4 supermajority or a confident leader by count."""
    config = SearchConfig(
        method="best_of_n", answer_selection="majority", width=16, max_tokens=512, max_depth=12, wave_size=4, **rule
    )
    policy = VotingPolicy(["41", "42"])
    (result,) = asyncio.run(solve_many(["What is 6 * 7?"], config, policy=policy, prm=FakePRM(), embedder=None))
    assert (result.metrics.waves, result.metrics.stop_reason, result.metrics.finished) == (4, "complete", 16)
    assert len(set(policy.root_seeds)) == 4  # each wave draws new samples


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_stops_early_once_the_answer_is_settled(method):
    full = search(method, ["42"])
    early = search(method, ["42"], **SUPERMAJORITY)
    assert early.metrics.stop_reason == "settled" and early.answer == "42"
    assert 4 <= early.metrics.finished < full.metrics.finished
    assert early.metrics.generated_tokens < full.metrics.generated_tokens


@pytest.mark.parametrize("method", sorted(set(METHODS) - {"best_of_n"}))
def test_a_tree_search_that_never_settles_is_the_search_without_a_stop_rule(method):
    """Tree methods do not sample in waves: until the rule holds, they search exactly as without it.
    Alternating answers: no prefix of them has a 3/4 supermajority of the count."""
    full = search(method, ["41", "42"], answer_selection="majority")
    tested = search(method, ["41", "42"], answer_selection="majority", **SUPERMAJORITY)
    assert tested.metrics.stop_reason == "complete"
    assert (tested.answer, tested.tree, tested.metrics.generated_tokens) == (
        full.answer,
        full.tree,
        full.metrics.generated_tokens,
    )


@pytest.mark.parametrize("method", sorted(set(METHODS) - {"best_of_n"}))
def test_replaying_the_rule_over_a_full_tree_gives_what_the_live_search_returned(method):
    """``report.replay_stop_rule`` stops a stored full-width tree where the live rule would have:
    the same answer, candidates, tokens, depth and KV as the search run with the rule."""
    answers = ["42", "41", "42", "42", "42", "42", "42", "43"]
    full = search(method, answers)
    early = search(method, answers, **SUPERMAJORITY)
    assert early.metrics.stop_reason == "settled" and full.metrics.stop_reason == "complete"
    config = SearchConfig(method=method, width=16, max_step_tokens=32, max_tokens=512, max_depth=12, **SUPERMAJORITY)
    replayed = report.replay_stop_rule(full, config)
    assert (replayed.answer, replayed.candidates) == (early.answer, early.candidates)
    for figure in ("generated_tokens", "generated_steps", "depth", "finished", "stop_reason", "kv_tokens_mean"):
        assert getattr(replayed.metrics, figure) == getattr(early.metrics, figure), figure
    assert replayed.metrics.generated_tokens < full.metrics.generated_tokens
    assert report.replay_stop_rule(early, config) is early  # no earlier round settles it
    assert report.replay_stop_rule(full, config.replace(stop_when="budget")) is full


# (answer, generated tokens, sha1 of the tree's parents and texts) per problem of test_loop's PROBLEMS
# at width 8, computed with the version before stop rules existed: the default must not change.
BEFORE_STOP_RULES = {
    "beam": [("40", 377, "21784aeb3c"), ("40", 352, "b089247eaa"), ("42", 367, "feffcc78a5")],
    "best_of_n": [("41", 356, "aade6504dc"), ("40", 364, "efd6f3b0d2"), ("42", 343, "3e4a927479")],
    "dvts": [("41", 295, "c0dccac41c"), ("40", 291, "2c89915265"), ("40", 273, "14f273afc5")],
    "ets": [("41", 342, "0d376e366d"), ("40", 364, "07e735b062"), ("42", 344, "739dc3a0b3")],
    "particle_filter": [("42", 366, "f2e08ce1c5"), ("40", 330, "850bb16374"), ("40", 365, "bdbd09a23c")],
    "rebase": [("41", 354, "b436e51934"), ("40", 364, "07e735b062"), ("42", 344, "5434fabdcb")],
}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_without_a_stop_rule_results_are_what_they_were(method):
    config = SearchConfig(method=method, width=8, max_step_tokens=32, max_tokens=256, max_depth=6)
    results = asyncio.run(solve_many(PROBLEMS, config, policy=FakePolicy(), prm=FakePRM(), embedder=FakeEmbedder()))
    got = [
        (
            r.answer,
            r.metrics.generated_tokens,
            hashlib.sha1(json.dumps([r.tree.parents, r.tree.texts]).encode()).hexdigest()[:10],
        )
        for r in results
    ]
    assert got == BEFORE_STOP_RULES[method]
    assert all((r.metrics.waves, r.metrics.stop_reason) == (1, "complete") for r in results)


def test_the_stop_reason_and_waves_survive_a_run_file_round_trip():
    result = search("best_of_n", ["42"], answer_selection="majority", **SUPERMAJORITY)
    back = ProblemResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert (back.metrics.stop_reason, back.metrics.waves) == ("settled", 1)
    assert "stop_reason" not in dict(back.metrics.items())  # the numeric figures a summary averages


# --- the rule -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lead", "runner_up"), [(0, 0), (4, 0), (3, 1), (6, 1), (4.2, 0), (2.5, 0.7), (30, 20), (0, 5)]
)
def test_leader_probability_is_the_beta_tail(lead, runner_up):
    assert leader_probability(lead, runner_up) == pytest.approx(beta.sf(0.5, lead + 1, runner_up + 1), abs=1e-6)


def rule(**settings) -> SearchConfig:
    return SearchConfig(method="best_of_n", width=8, **settings)


def test_supermajority_needs_the_share_and_the_minimum_of_answered_trajectories():
    votes = [("42", [0.9])] * 3 + [("41", [0.9])] + [(None, [0.9])] * 2
    assert settled(votes, rule(stop_when="supermajority", stop_share=0.75), "majority", "last")
    assert not settled(votes, rule(stop_when="supermajority", stop_share=0.8), "majority", "last")
    assert not settled(votes, rule(stop_when="supermajority", stop_share=0.75, stop_min_finished=5), "majority", "last")
    assert not settled(votes, rule(), "majority", "last")  # stop_when=budget never stops


def test_votes_are_weighted_by_the_prm_where_the_selection_is():
    votes = [("42", [0.2])] * 3 + [("41", [0.9])]  # 3 of 4 by count; 0.9 of 1.5 for 41 by weight
    settings = rule(stop_when="supermajority", stop_share=0.7)
    assert settled(votes, settings, "majority", "last")
    assert not settled(votes, settings, "weighted_majority", "last")


def test_posterior_weighs_the_leader_against_the_runner_up():
    settings = rule(stop_when="posterior", stop_confidence=0.95)
    assert settled([("42", [1.0])] * 4, settings, "majority", "last")  # P = 1 - 2**-5 = 0.969
    assert not settled([("42", [1.0])] * 5 + [("41", [1.0])], settings, "majority", "last")  # 0.9375
    assert not settled([("42", [0.5])] * 4, settings, "weighted_majority", "last")  # weights 2 vs 0: 0.875


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"stop_when": "always"}, "stop_when"),
        ({"stop_when": "supermajority", "stop_share": 0.5}, "stop_share"),
        ({"stop_when": "posterior", "stop_confidence": 1.0}, "stop_confidence"),
        ({"stop_when": "posterior", "stop_min_finished": 0}, "stop_min_finished"),
        ({"stop_when": "posterior", "width": 3}, "stop_min_finished (4) exceeds width (3)"),
        ({"stop_when": "posterior", "wave_size": 9}, "wave_size (9) exceeds width (8)"),
        ({"stop_when": "supermajority", "answer_selection": "highest_score"}, "highest_score takes no vote"),
    ],
)
def test_bad_stop_settings_are_a_config_error(settings, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SearchConfig(**{"method": "best_of_n", "width": 8, **settings})


def test_the_adaptive_recipe_turns_the_rule_on():
    config = SearchConfig.load("majority_adaptive_8")
    assert (config.stop_when, config.stop_share, config.stop_min_finished, config.wave_size) == (
        "supermajority",
        0.75,
        2,
        2,
    )
    assert SearchConfig().stop_when == "budget"
