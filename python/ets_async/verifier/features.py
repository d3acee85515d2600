"""The policy's hidden states at the end of every labelled step, read with a transformers forward of
the same weights that vLLM serves (extraction only: the verifier is served by vLLM, ``verifier_checkpoint.py``).

A feature of layer ``k`` is the residual stream after ``k`` decoder layers passed through the model's
final norm: for ``k`` = the number of layers that is the last hidden state, which the served verifier
reads; for a smaller ``k`` it is what the first ``k`` layers alone (a truncated model) would output.

Features of a run file are cached per problem in one ``.npz`` each under a folder, so an interrupted
extraction resumes and a new run file adds only its new problems.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..backends.vllm_policy import render_chat
from ..models import cache_root
from .labels import LabeledTree

log = logging.getLogger("ets_async")


@dataclass(frozen=True)
class TreeFeatures:
    """One problem's labelled nodes with their features by layer (float32, one row per node)."""

    problem_id: str
    nodes: np.ndarray  # int64 node ids
    depth: np.ndarray  # int64
    value: np.ndarray  # float32: share of right leaves below
    is_leaf: np.ndarray  # bool
    layers: dict[int, np.ndarray]

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp.npz")
        arrays: dict[str, np.ndarray] = {
            "problem_id": np.array(self.problem_id),
            "nodes": self.nodes,
            "depth": self.depth,
            "value": self.value,
            "is_leaf": self.is_leaf,
            **{f"layer_{k}": v.astype(np.float16) for k, v in self.layers.items()},
        }
        np.savez(tmp, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as allow_pickle
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> TreeFeatures:
        with np.load(path) as data:
            layers = {
                int(k.removeprefix("layer_")): data[k].astype(np.float32) for k in data.files if k.startswith("layer_")
            }
            return cls(
                str(data["problem_id"]),
                data["nodes"],
                data["depth"],
                data["value"].astype(np.float32),
                data["is_leaf"],
                layers,
            )


class HiddenStateReader:
    """A transformers forward of a policy's decoder body (no LM head), reading normed hidden states."""

    def __init__(
        self, model_path: str, layers: Sequence[int], *, dtype: str = "bfloat16", threads: int | None = None
    ) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as transformers_logging

        transformers_logging.set_verbosity_error()  # not the load report of a body read without its LM head
        transformers_logging.disable_progress_bar()

        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.model = AutoModel.from_pretrained(model_path, dtype=getattr(torch, dtype)).eval()
        self.num_layers = int(self.model.config.num_hidden_layers)
        bad = [k for k in layers if not 1 <= k <= self.num_layers]
        if bad:
            raise ValueError(f"layers must be in 1..{self.num_layers}, got {bad}")
        self.layers = tuple(layers)

    def last_token_features(self, token_ids: Sequence[int], cache: Any = None) -> dict[int, np.ndarray]:
        """Feed ``token_ids`` after what ``cache`` (a transformers KV cache, extended in place) holds;
        the features of their last token by layer."""
        torch = self.torch
        with torch.inference_mode():
            out = self.model(
                input_ids=torch.tensor([list(token_ids)]),
                past_key_values=cache,
                output_hidden_states=True,
                use_cache=cache is not None,
            )
            features = {}
            for k in self.layers:
                state = out.hidden_states[k][0, -1]
                if k < self.num_layers:  # hidden_states[L] is already normed; earlier ones are the raw residual stream
                    state = self.model.norm(state)
                features[k] = state.float().numpy()
            return features

    def tree_features(self, tree: LabeledTree, prompt_ids: Sequence[int]) -> TreeFeatures:
        """Features of every labelled node, each step's tokens computed once: a depth-first walk that
        extends one KV cache by a node's step and crops it back to the parent's length on the way up.
        Each step's text is encoded on its own, as the policy generated it step by step."""
        from transformers import DynamicCache

        children: dict[int, list[int]] = {}
        for node in tree.nodes:
            children.setdefault(tree.parents[node], []).append(node)
        rows: dict[int, dict[int, np.ndarray]] = {}
        cache = DynamicCache(config=self.model.config)
        self.last_token_features(prompt_ids, cache)
        stack = [(child, len(prompt_ids)) for child in reversed(children.get(0, []))]
        while stack:
            node, parent_end = stack.pop()
            if (extra := cache.get_seq_length() - parent_end) > 0:
                cache.crop(-extra)
            step = self.tokenizer.encode(tree.steps[node], add_special_tokens=False) or [self.tokenizer.eos_token_id]
            rows[node] = self.last_token_features(step, cache)
            end = parent_end + len(step)
            stack.extend((child, end) for child in reversed(children.get(node, [])))
        return TreeFeatures(
            problem_id=tree.problem_id,
            nodes=np.array(tree.nodes, dtype=np.int64),
            depth=np.array(tree.depth, dtype=np.int64),
            value=np.array(tree.value, dtype=np.float32),
            is_leaf=np.array(tree.is_leaf, dtype=bool),
            layers={k: np.stack([rows[n][k] for n in tree.nodes]) for k in self.layers},
        )


def default_features_dir(policy_dir: str) -> Path:
    """Where a policy's features are cached by default: one folder per policy path under ets_async's cache."""
    key = hashlib.sha256(str(Path(policy_dir).resolve()).encode()).hexdigest()[:12]
    return cache_root() / "verifier-features" / f"{Path(policy_dir).name}-{key}"


def _file_name(problem_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", problem_id) + ".npz"


def extract_features(
    trees: Iterable[LabeledTree],
    reader: HiddenStateReader,
    render: Callable[[str], Sequence[int]],
    cache_dir: Path,
    *,
    limit_s: float | None = None,
) -> list[TreeFeatures]:
    """Features of every tree, read from ``cache_dir`` where a problem's file exists with every
    requested layer and computed (and saved) otherwise. ``render`` gives a problem's prompt ids.
    With ``limit_s``, stops computing new problems after that many seconds (resume later)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    done: list[TreeFeatures] = []
    computed = 0
    for tree in trees:
        path = cache_dir / _file_name(tree.problem_id)
        if path.is_file():
            cached = TreeFeatures.load(path)
            if set(reader.layers) <= set(cached.layers) and len(cached.nodes) == len(tree.nodes):
                done.append(cached)
                continue
        if limit_s is not None and time.perf_counter() - started > limit_s:
            log.info("feature extraction: time limit reached after %d new problems", computed)
            break
        features = reader.tree_features(tree, render(tree.problem))
        features.save(path)
        done.append(features)
        computed += 1
    return done


def prompt_renderer(tokenizer: Any, config: dict[str, Any]) -> Callable[[str], list[int]]:
    """A problem's root prompt ids as the search rendered them (the run header's system prompt and template)."""
    from ..config import DEFAULT_SYSTEM_PROMPT

    system = config.get("system_prompt", DEFAULT_SYSTEM_PROMPT)
    template = config.get("prompt_template", "{problem}")
    return lambda problem: render_chat(tokenizer, problem, system, template)
