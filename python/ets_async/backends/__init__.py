"""Backends: the protocols, and ``load_backends``, the one loader of a configured set (in process or
on servers)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..config import EngineConfig
from ..errors import ConfigError, UnguardedScriptError
from .prm_kinds import PRM_KINDS, PRMLike, as_prm
from .protocols import PRM, Embedder, Expansion, Policy, Sampling, ScoreRequest, ScoringTransport

if TYPE_CHECKING:
    from .vllm_engine import InProcessEngine

log = logging.getLogger("ets_async")


@dataclass
class Backends:
    """A policy, a PRM and an embedder, plus the in-process engines they run on (none on servers)."""

    policy: Policy
    prm: PRM
    embedder: Embedder | None
    engines: tuple[InProcessEngine, ...] = ()

    def failure(self) -> str | None:
        """Why these backends cannot serve any more (one of their engines died), or None while they can.
        After a failure, start new backends (``load_backends``, or a ``BackendsSupervisor``); these stay
        unusable."""
        for engine in self.engines:
            if (why := engine.failure()) is not None:
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


def with_checks(config: EngineConfig, prm: PRM) -> PRM:
    """``prm`` with the configured model-free checks applied on top (``arithmetic_check``)."""
    from .confidence_prm import ArithmeticCheckedPRM

    if config.arithmetic_check and config.prm != "arithmetic":
        return ArithmeticCheckedPRM(prm)
    return prm


def load_backends(config: EngineConfig | None = None) -> Backends:
    """Start the configured backends: by default the embedded Qwen2.5-Coder-1.5B-Instruct policy on an
    in-process vLLM engine, the confidence PRM (the policy's own token probabilities, no engine of its
    own) and the all-MiniLM-L6-v2 embedder (loaded on first use). With ``endpoints`` (or
    ``$ETS_ASYNC_ENDPOINTS``) the policy runs on those servers instead; a PRM with a model of its own
    (``PRM_KINDS``) runs on a second engine (``prm_model``, ``prm_*`` settings) or on ``prm_endpoints``."""
    _refuse_while_bootstrapping()
    config = config or EngineConfig()
    kind = PRM_KINDS[config.prm]
    if kind.model == "policy" and config.prm_model is not None:
        raise ConfigError(f"prm={config.prm!r} reads the policy's own model: leave prm_model unset")
    if kind.model == "own" and config.prm_model is None and config.prm != "verifier":
        raise ConfigError(f"prm={config.prm!r} needs prm_model (a local path or model name)")
    from .fleet import endpoints_from_env

    endpoints = config.endpoints or endpoints_from_env()
    if kind.model == "own" and not endpoints:
        _check_memory_shares(config)
    if endpoints:
        policy, policy_transport, policy_tokenizer, engines = _fleet_policy(config, endpoints)
    else:
        policy, policy_transport, policy_tokenizer, engines = _engine_policy(config)
    transport: ScoringTransport | None = None
    tokenizer: Any = None
    if kind.model == "policy":
        transport, tokenizer = policy_transport, policy_tokenizer()
    elif kind.model == "own":
        try:
            transport, tokenizer, prm_engines = (_fleet_prm if endpoints else _engine_prm)(config, kind.runner)
        except BaseException:
            for engine in engines:
                engine.shutdown()
            raise
        engines += prm_engines
    prm = kind.build(transport, tokenizer)
    return Backends(policy, with_checks(config, prm), sentence_embedder(config), engines=engines)


def _refuse_while_bootstrapping() -> None:
    """Say what to do when a script without a ``__main__`` guard is imported again by the process vLLM
    spawns for its engine (multiprocessing marks a process that is still starting as ``_inheriting``),
    instead of multiprocessing's error about bootstrapping."""
    import multiprocessing

    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise UnguardedScriptError(
            "ets_async was asked to start an engine while a new process was importing your script: vLLM runs "
            "its engine in a process of its own, which imports the main script again. Put the code that "
            "searches (solve_many, load_backends, ...) under 'if __name__ == \"__main__\":' at the bottom of "
            "the script (as in the README's examples). A notebook or the REPL needs no guard."
        )


def _check_memory_shares(config: EngineConfig) -> None:
    """Two engines on one GPU must fit together; say so before either starts."""
    import torch

    shared = config.prm_devices is None or config.prm_devices == config.devices
    total = config.gpu_memory_utilization + config.prm_gpu_memory_utilization
    if torch.cuda.is_available() and shared and total > 0.95:
        raise ConfigError(
            f"the policy's and the PRM's engines share a GPU and ask for {total:.2f} of its memory "
            f"(gpu_memory_utilization {config.gpu_memory_utilization:g} + prm_gpu_memory_utilization "
            f"{config.prm_gpu_memory_utilization:g}): lower gpu_memory_utilization to at most "
            f"{0.95 - config.prm_gpu_memory_utilization:.2f}, or put the PRM on another GPU (prm_devices)"
        )


# What opening a policy gives: the policy, a PRM transport on its model, its tokenizer (on demand),
# and the engines to shut down.
_OpenedPolicy = tuple[Policy, ScoringTransport, Callable[[], Any], tuple["InProcessEngine", ...]]


def _engine_policy(config: EngineConfig) -> _OpenedPolicy:
    from .. import models
    from .vllm_engine import EngineTransport, InProcessEngine
    from .vllm_policy import VllmPolicy

    policy_model = models.resolve_model(config.model)
    log.info("starting policy engine on %s", policy_model)
    engine = InProcessEngine.start(config, policy_model)
    tokenizer = engine.llm.get_tokenizer()
    limit = config.request_timeout_s
    policy = VllmPolicy(
        engine, tokenizer, temperature=models.measured_temperature(config.model), request_timeout_s=limit
    )
    return policy, EngineTransport(engine, request_timeout_s=limit), lambda: tokenizer, (engine,)


def _engine_prm(config: EngineConfig, runner: Any) -> tuple[ScoringTransport, Any, tuple[InProcessEngine, ...]]:
    """The PRM's own in-process engine (a second AsyncLLM, with the PRM's memory share and devices)."""
    from .vllm_engine import EngineTransport, InProcessEngine

    prm_model = _prm_model(config)
    log.info("starting PRM engine on %s", prm_model)
    engine = InProcessEngine.start(config.prm_engine(), prm_model, runner=runner)
    return EngineTransport(engine, request_timeout_s=config.request_timeout_s), engine.llm.get_tokenizer(), (engine,)


def _prm_model(config: EngineConfig) -> str:
    """The PRM's model folder or name: a verifier is built over the policy (``models.resolve_verifier``)."""
    from .. import models

    if config.prm == "verifier":
        return models.resolve_verifier(config.prm_model, config.model)
    return models.resolve_model(config.prm_model)


def _fleet_policy(config: EngineConfig, endpoints: Any) -> _OpenedPolicy:
    from .fleet import connect

    fleet = connect(endpoints, config.model, _http_client(config), max_model_len=config.max_model_len)
    return fleet.policy(), fleet.transport(), fleet.tokenizer.get, ()


def _fleet_prm(config: EngineConfig, runner: Any) -> tuple[ScoringTransport, Any, tuple[InProcessEngine, ...]]:
    from .fleet import connect

    if not config.prm_endpoints:
        raise ConfigError(f"prm={config.prm!r} on a fleet needs prm_endpoints (its servers, {runner} runner)")
    fleet = connect(config.prm_endpoints, _prm_model(config), _http_client(config), role="PRM")
    return fleet.transport(), fleet.tokenizer.get(), ()


def _http_client(config: EngineConfig) -> Any:
    from .fleet import HttpClient, RetryPolicy

    return HttpClient(RetryPolicy(timeout_s=config.request_timeout_s, attempts=config.request_retries))


__all__ = [
    "PRM",
    "PRM_KINDS",
    "PRMLike",
    "Backends",
    "Embedder",
    "Expansion",
    "Policy",
    "Sampling",
    "ScoreRequest",
    "ScoringTransport",
    "as_prm",
    "load_backends",
]
