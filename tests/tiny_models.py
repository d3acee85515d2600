"""Tiny models made at test time: real architectures and tokenizer files, random weights from a fixed
seed, about a megabyte each, no hub. vLLM loads them as it would the real ones, so the engine's
read-out positions can be checked against a direct transformers forward of the same weights.

- ``causal_lm``: a Qwen2ForCausalLM (a policy, or a Math-Shepherd style step-tag PRM read through
  its LM head: the tag ``ки`` and the labels ``+`` / ``-`` are one token each).
- ``process_reward_model``: a Qwen2ForProcessRewardModel (Qwen2.5-Math-PRM's architecture: the
  Qwen2 body and a two-layer head giving two classes per token; steps end in ``<extra_0>``).
"""

from __future__ import annotations

from pathlib import Path

from ets_async.answers import SHEPHERD_STEP_TAG

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<extra_0>"]

# Qwen2's chat template, short form: every message as <|im_start|>role\ncontent<|im_end|>\n.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

CORPUS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    "Step 1: 48 / 2 = 24 clips in May. Step 2: 48 + 24 = 72 clips in total. The answer is 72.",
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting.",
    "Please reason step by step, and put your final answer within \\boxed{}.",
    "Is the last step above correct? Answer Yes or No. Answer: Yes No",
    "3 apples + 5 apples = 8 apples. 12 * 50 / 60 = 10 dollars. x = 4, so 2x = 8.",
]


def _tokenizer(path: Path, source: Path | None = None):
    """A byte-level BPE trained on ``CORPUS`` (600 tokens), or the tokenizer in ``source`` (e.g. a real
    Qwen2.5 folder, to count tokens as a real model would) with ``<extra_0>`` and the step tag added."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if source is not None:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
        tokenizer.add_special_tokens({"additional_special_tokens": ["<extra_0>"]}, replace_extra_special_tokens=False)
        tokenizer.add_tokens([SHEPHERD_STEP_TAG])
        tokenizer.save_pretrained(path)
        return tokenizer

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(CORPUS * 4, trainer)
    core.add_tokens([SHEPHERD_STEP_TAG])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(path)
    return tokenizer


def _config(tokenizer, architecture: str):
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=-(-len(tokenizer) // 64) * 64,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,  # head size 32, one the CPU attention backend supports
        num_key_value_heads=1,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        architectures=[architecture],
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        bos_token_id=None,
        torch_dtype="float32",
        initializer_range=0.2,  # wider than the default 0.02, so that scores differ from token to token
    )


def causal_lm(path: Path, seed: int = 0, tokenizer_source: Path | None = None) -> Path:
    """A tiny Qwen2ForCausalLM with its tokenizer in ``path``."""
    import torch
    from transformers import Qwen2ForCausalLM

    path.mkdir(parents=True, exist_ok=True)
    config = _config(_tokenizer(path, tokenizer_source), "Qwen2ForCausalLM")
    torch.manual_seed(seed)
    Qwen2ForCausalLM(config).save_pretrained(path)
    return path


def process_reward_model(path: Path, seed: int = 0, tokenizer_source: Path | None = None) -> Path:
    """A tiny Qwen2ForProcessRewardModel with its tokenizer in ``path``: the Qwen2 body's weights under
    ``model.``, the head under ``score.0`` (hidden -> hidden, ReLU) and ``score.2`` (hidden -> 2),
    as in Qwen2.5-Math-PRM's checkpoints."""
    import torch
    from safetensors.torch import save_file
    from transformers import Qwen2Model

    path.mkdir(parents=True, exist_ok=True)
    config = _config(_tokenizer(path, tokenizer_source), "Qwen2ForProcessRewardModel")
    config.num_labels = 2
    torch.manual_seed(seed)
    body = Qwen2Model(config)
    head = prm_head(config)
    weights = {f"model.{k}": v for k, v in body.state_dict().items()}
    weights |= {f"score.{k}": v for k, v in head.state_dict().items()}
    save_file(
        {k: v.contiguous() for k, v in weights.items()}, str(path / "model.safetensors"), metadata={"format": "pt"}
    )
    config.save_pretrained(path)
    return path


def prm_head(config):
    """The PRM's head as vLLM builds it (``Qwen2RewardBaseModel.score``)."""
    from torch import nn

    return nn.Sequential(nn.Linear(config.hidden_size, config.hidden_size), nn.ReLU(), nn.Linear(config.hidden_size, 2))


def reference_step_probabilities(path: Path, token_ids: list[int]) -> list[list[float]]:
    """Per-token class probabilities of the tiny PRM by a direct transformers forward."""
    import torch
    from safetensors.torch import load_file
    from transformers import Qwen2Config, Qwen2Model

    config = Qwen2Config.from_pretrained(path)
    weights = load_file(str(path / "model.safetensors"))
    body = Qwen2Model(config)
    body.load_state_dict({k.removeprefix("model."): v for k, v in weights.items() if k.startswith("model.")})
    head = prm_head(config)
    head.load_state_dict({k.removeprefix("score."): v for k, v in weights.items() if k.startswith("score.")})
    with torch.no_grad():
        hidden = body(input_ids=torch.tensor([token_ids])).last_hidden_state[0]
        return torch.softmax(head(hidden), dim=-1).tolist()


def reference_next_token_logprobs(path: Path, token_ids: list[int]) -> list[float]:
    """The tiny causal LM's next-token log-probabilities after ``token_ids`` (transformers forward)."""
    import torch
    from transformers import Qwen2ForCausalLM

    model = Qwen2ForCausalLM.from_pretrained(path, torch_dtype=torch.float32)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([token_ids])).logits[0, -1]
        return torch.log_softmax(logits, dim=-1).tolist()
