"""Backends: the protocols, and ``load_backends`` which builds the configured in-process set."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from ..config import EngineConfig
from ..errors import ConfigError
from .protocols import PRM, Embedder, Expansion, Policy, Sampling, ScoreRequest

log = logging.getLogger("ets_async")


@dataclass
class Backends:
    """A policy, a PRM and an embedder, plus the engines that own their resources."""

    policy: Policy
    prm: PRM
    embedder: Embedder | None
    engines: tuple[Any, ...] = ()

    def failure(self) -> str | None:
        """Why these backends cannot serve any more (one of their engines died), or None while they can.
        After a failure, start new backends (``load_backends``); these stay unusable."""
        from .vllm_engine import engine_failure

        for engine in self.engines:
            if (why := engine_failure(engine)) is not None:
                return why
        return None

    def shutdown(self) -> None:
        """Stop the engines and the embedder's worker thread."""
        for engine in self.engines:
            engine.shutdown()
        close = getattr(self.embedder, "close", None)
        if close is not None:
            close()


def sentence_embedder(config: EngineConfig) -> Embedder:
    """The configured sentence embedder (default all-MiniLM-L6-v2) with its calibrated clustering cut."""
    from .. import models
    from .embedder import SentenceTransformerEmbedder

    path = models.resolve_model(config.embedder_model, models.DEFAULT_EMBEDDER)
    return SentenceTransformerEmbedder(path, cluster_threshold=models.calibrated_cut(config.embedder_model))


def model_free_prm(config: EngineConfig) -> PRM | None:
    """The PRM of ``config`` when it needs no model of its own (confidence, arithmetic), else None."""
    from .confidence_prm import ArithmeticCheckedPRM, ConfidencePRM

    if config.prm == "confidence":
        return ConfidencePRM()
    if config.prm == "arithmetic":
        return ArithmeticCheckedPRM()
    return None


def with_checks(config: EngineConfig, prm: PRM) -> PRM:
    """``prm`` with the configured model-free checks applied on top (``arithmetic_check``)."""
    from .confidence_prm import ArithmeticCheckedPRM

    if config.arithmetic_check and config.prm != "arithmetic":
        return ArithmeticCheckedPRM(prm)
    return prm


def load_backends(config: EngineConfig | None = None) -> Backends:
    """Start the configured engines: by default the embedded Qwen2.5-Coder-1.5B-Instruct policy on
    vLLM, the confidence PRM (the policy's own token probabilities, no engine of its own), and the
    all-MiniLM-L6-v2 embedder (loaded on first use)."""
    from .. import models
    from .judge_prm import judge_prm
    from .vllm_engine import create_engine
    from .vllm_policy import VllmPolicy
    from .vllm_prm import QwenPRM, math_shepherd_prm

    config = config or EngineConfig()
    from ..fleet import endpoints_from_env, load_fleet_backends

    if endpoints := config.endpoints or endpoints_from_env():  # servers instead of an in-process engine
        return load_fleet_backends(config, endpoints)
    policy_model = models.resolve_model(config.model)
    log.info("starting policy engine on %s", policy_model)
    engine = create_engine(config, policy_model)
    engines = [engine]
    tokenizer = engine.get_tokenizer()
    limit = config.request_timeout_s
    policy = VllmPolicy(
        engine, tokenizer, temperature=models.measured_temperature(config.model), request_timeout_s=limit
    )
    prm: PRM
    if (free := model_free_prm(config)) is not None:
        prm = free
    elif config.prm == "judge":
        if config.prm_model not in (None, policy_model):
            raise ConfigError("the judge PRM reads the policy's own token ids: leave prm_model unset for prm='judge'")
        prm = judge_prm(engine, tokenizer, request_timeout_s=limit)
    else:
        if config.prm_model is None:
            raise ConfigError(f"prm={config.prm!r} needs prm_model (a local path or model name)")
        prm_engine = create_engine(config, config.prm_model, runner="pooling" if config.prm == "qwen_prm" else "generate")
        engines.append(prm_engine)
        prm_tokenizer = prm_engine.get_tokenizer()
        if config.prm == "qwen_prm":
            prm = QwenPRM(prm_engine, prm_tokenizer, request_timeout_s=limit)
        else:
            prm = math_shepherd_prm(prm_engine, prm_tokenizer, request_timeout_s=limit)
    return Backends(policy, with_checks(config, prm), sentence_embedder(config), engines=tuple(engines))


__all__ = ["PRM", "Backends", "Embedder", "Expansion", "Policy", "Sampling", "ScoreRequest", "load_backends"]
