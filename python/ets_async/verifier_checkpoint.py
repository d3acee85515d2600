"""The verifier on disk: the trained head as a small safetensors file (what the repository ships), and
the folder vLLM's pooling runner serves: the policy's weights under Qwen2.5-Math-PRM's architecture
(``Qwen2ForProcessRewardModel``: the Qwen2 body, then ``score.0`` hidden -> hidden, ReLU, ``score.2``
hidden -> 2 classes; vLLM reads the keys in ``model_executor/models/qwen2_rm.py``), with the head
written into that layout. P(class 1) at a step's last token is the verifier's value of the
trajectory so far.

Both head kinds fit the layout exactly: a linear head ``z = a.h + c`` as ``relu(z) - relu(-z)`` (two
rows of ``score.0``), an MLP head of width m <= hidden as its first m rows; class 0 gets logit 0, so
softmax gives sigmoid(z). A head on a middle layer k is served by a policy truncated to its first k
layers (the final norm kept), which is also k/L of the cost.

This sits outside the ``verifier`` package, which trains heads (and reaches the backends through its
features), so that the model registry builds a registered verifier's folder (``models.prepare_model``)
without importing any of that.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

ARCHITECTURE = "Qwen2ForProcessRewardModel"
HEAD_FILE = "verifier_head.safetensors"
SCORE_FILE = "score.safetensors"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
)
MARKER = "ets_async_verifier.json"

HeadKind = Literal["linear", "mlp"]


@dataclass
class TrainedHead:
    """A head's weights as plain arrays, in the frame of raw hidden states (the standardisation folded
    in): linear ``z = a @ h + c``; mlp ``z = v @ relu(U @ h + d) + e``; P(right) = sigmoid(z)."""

    kind: HeadKind
    layer: int
    weights: dict[str, np.ndarray]

    def logits(self, features: np.ndarray) -> np.ndarray:
        w = self.weights
        if self.kind == "linear":
            return features @ w["a"] + w["c"]
        hidden = np.maximum(features @ w["U"].T + w["d"], 0.0)
        return hidden @ w["v"] + w["e"]


def sha256_of(path: str | os.PathLike[str]) -> str:
    """A file's sha256 (hex), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def save_head(head: TrainedHead, path: str | os.PathLike[str], metadata: dict[str, Any]) -> str:
    """Write the head (float32 arrays, plus ``kind``, ``layer`` and ``metadata`` as JSON); its sha256."""
    from safetensors.numpy import save_file

    meta = {"kind": head.kind, "layer": str(head.layer), "metadata": json.dumps(metadata, sort_keys=True)}
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in head.weights.items()}, str(path), metadata=meta)
    return sha256_of(path)


def load_head(path: str | os.PathLike[str]) -> tuple[TrainedHead, dict[str, Any]]:
    """A head written by ``save_head`` and its metadata."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as fh:
        meta = fh.metadata() or {}
        if meta.get("kind") not in ("linear", "mlp") or "layer" not in meta:
            raise ValueError(f"{path}: not a verifier head (no kind/layer metadata)")
        weights = {k: fh.get_tensor(k) for k in fh.keys()}
    return TrainedHead(meta["kind"], int(meta["layer"]), weights), json.loads(meta.get("metadata", "{}"))  # type: ignore[arg-type]


def score_tensors(head: TrainedHead, hidden_size: int) -> dict[str, np.ndarray]:
    """The head as ``score.0.{weight,bias}`` (hidden x hidden) and ``score.2.{weight,bias}`` (2 x hidden)."""
    w1 = np.zeros((hidden_size, hidden_size), dtype=np.float32)
    b1 = np.zeros(hidden_size, dtype=np.float32)
    w2 = np.zeros((2, hidden_size), dtype=np.float32)
    b2 = np.zeros(2, dtype=np.float32)
    if head.kind == "linear":
        a, c = head.weights["a"], float(head.weights["c"].reshape(-1)[0])
        w1[0], b1[0] = a, c
        w1[1], b1[1] = -a, -c
        w2[1, 0], w2[1, 1] = 1.0, -1.0
    else:
        u, d, v, e = (head.weights[k] for k in ("U", "d", "v", "e"))
        width = u.shape[0]
        if width > hidden_size:
            raise ValueError(f"an MLP head of width {width} does not fit a hidden size of {hidden_size}")
        w1[:width], b1[:width] = u, d
        w2[1, :width], b2[1] = v, float(e.reshape(-1)[0])
    return {"score.0.weight": w1, "score.0.bias": b1, "score.2.weight": w2, "score.2.bias": b2}


def _truncated_weights(source: Path, target: Path, layers: int) -> None:
    """Copy the body's weights of the first ``layers`` decoder layers (and embeddings, final norm)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    tensors = {}
    for file in sorted(source.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as fh:
            for name in fh.keys():
                parts = name.split(".")
                if name.startswith("lm_head."):
                    continue
                if parts[:2] == ["model", "layers"] and int(parts[2]) >= layers:
                    continue
                tensors[name] = fh.get_tensor(name)
    save_file(tensors, str(target), metadata={"format": "pt"})


SERVABLE_POLICIES = ("Qwen2ForCausalLM",)


def check_servable(policy_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The policy's config, if a verifier over it can be served: the serving layout is the Qwen2 body's,
    and another body's weights would load into it wrongly (a Llama has no attention biases: the scores
    come out NaN)."""
    config: dict[str, Any] = json.loads((Path(policy_dir) / "config.json").read_text())
    architectures = config.get("architectures") or []
    if not set(architectures) & set(SERVABLE_POLICIES):
        raise ValueError(
            f"{policy_dir} is a {', '.join(architectures) or 'model without architectures'}: a verifier is served as "
            f"{ARCHITECTURE} over the policy's weights, which only a {' or '.join(SERVABLE_POLICIES)} policy fits"
        )
    return config


def write_checkpoint(policy_dir: str | os.PathLike[str], head_path: str | os.PathLike[str], into: Path) -> None:
    """Fill the empty folder ``into`` with the verifier's serving checkpoint."""
    from safetensors.numpy import save_file

    policy = Path(policy_dir)
    head, metadata = load_head(head_path)
    config = check_servable(policy)
    total = int(config["num_hidden_layers"])
    if not 1 <= head.layer <= total:
        raise ValueError(f"the head reads layer {head.layer}, the policy has {total}")
    if (policy / "model.safetensors.index.json").is_file() and head.layer == total:
        raise ValueError(f"{policy}: sharded checkpoints (an index file) are not supported")
    config["architectures"] = [ARCHITECTURE]
    config["num_labels"] = 2
    if head.layer < total:
        config["num_hidden_layers"] = head.layer
        if isinstance(config.get("layer_types"), list):
            config["layer_types"] = config["layer_types"][: head.layer]
        config["max_window_layers"] = min(int(config.get("max_window_layers", head.layer)), head.layer)
        _truncated_weights(policy, into / "model.safetensors", head.layer)
    else:
        for file in policy.glob("*.safetensors"):
            os.symlink(file.resolve(), into / file.name)
    (into / "config.json").write_text(json.dumps(config, indent=1))
    for name in TOKENIZER_FILES:
        if (policy / name).is_file():
            shutil.copyfile(policy / name, into / name)
    save_file(score_tensors(head, int(config["hidden_size"])), str(into / SCORE_FILE), metadata={"format": "pt"})
    (into / MARKER).write_text(
        json.dumps(
            {
                "head_sha256": sha256_of(head_path),
                "policy": str(policy.resolve()),
                "kind": head.kind,
                "layer": head.layer,
                "head": metadata,
            },
            indent=1,
        )
    )


def build_checkpoint(
    policy_dir: str | os.PathLike[str], head_path: str | os.PathLike[str], out_dir: str | os.PathLike[str]
) -> Path:
    """Write the serving folder of a head file at ``out_dir``, replacing it whole and atomically."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        write_checkpoint(policy_dir, head_path, tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
