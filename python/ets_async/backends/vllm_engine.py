"""The in-process vLLM engine: creation from an EngineConfig, and one request run to completion
with its abort on cancellation or error (the only place that owns engine request ids)."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar

from ..config import Dtype, EngineConfig

if TYPE_CHECKING:
    from vllm import RequestOutput, SamplingParams
    from vllm.v1.engine.async_llm import AsyncLLM

Out = TypeVar("Out")

_request_ids = itertools.count()


def next_request_id(tag: str) -> str:
    """A process-unique engine request id."""
    return f"{tag}-{next(_request_ids)}"


def resolve_dtype(dtype: Dtype) -> Dtype:
    """``auto`` on a CPU without native bf16 (AVX-512 BF16 or AMX) means float32: emulated bf16
    matmuls there run about 4x slower than float32 (measured: 26 vs 105 tok/s, SmolLM2-135M, AVX2)."""
    if dtype != "auto":
        return dtype
    import torch

    if torch.cuda.is_available():
        return "auto"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "auto"
    return "bfloat16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "float32"


def cpu_binding(cores: str) -> str:
    """``EngineConfig.cpu_cores`` as a VLLM_CPU_OMP_THREADS_BIND value.

    ``all`` lists the cores this process may run on. vLLM's ``auto`` keeps one core per worker free
    for its scheduler process, which halves a 2-core machine: measured here, 16 concurrent ETS
    problems (W=4, SmolLM2-135M) took 128 s on both cores against 181 s on one.
    """
    if cores == "all":
        return ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
    return cores


@contextmanager
def _engine_environment(config: EngineConfig, on_cpu: bool) -> Iterator[None]:
    """The CPU settings vLLM reads from the environment when it spawns the engine; variables the
    user already set win. The process environment is restored afterwards."""
    wanted = {"VLLM_CPU_KVCACHE_SPACE": str(config.cpu_kv_cache_gib)}
    if on_cpu:
        wanted["VLLM_CPU_OMP_THREADS_BIND"] = cpu_binding(config.cpu_cores)
    added = [key for key in wanted if key not in os.environ]
    os.environ.update({key: wanted[key] for key in added})
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def create_engine(
    config: EngineConfig, model: str, *, runner: Literal["generate", "pooling"] = "generate"
) -> AsyncLLM:
    """An AsyncLLM with prefix caching on. On CPU the KV cache size comes from ``cpu_kv_cache_gib``,
    and chunked prefill is off: vLLM rewinds a seeded request's random generator after a partial
    prefill, which CPU generators cannot do ("CPU Generator does not use offset" kills the engine
    once many seeded requests share a step's token budget). The worker runs on ``cpu_cores``."""
    import torch
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    on_cpu = not torch.cuda.is_available()

    args = AsyncEngineArgs(
        model=model,
        runner=runner,
        dtype=resolve_dtype(config.dtype),
        enforce_eager=config.enforce_eager,
        block_size=config.block_size,
        enable_prefix_caching=True,
        max_model_len=config.max_model_len,
        gpu_memory_utilization=config.gpu_memory_utilization,
        max_num_seqs=config.max_num_seqs,
        num_gpu_blocks_override=config.kv_cache_blocks,
        enable_chunked_prefill=not on_cpu,
        max_num_batched_tokens=max(config.max_model_len, 2048) if on_cpu else None,
        disable_log_stats=False,
    )
    with _engine_environment(config, on_cpu):
        return AsyncLLM.from_engine_args(args)


async def run_request(
    engine: AsyncLLM,
    prompt_token_ids: Sequence[int],
    params: SamplingParams,
    *,
    tag: str = "ets",
) -> RequestOutput:
    """Submit one token-id prompt for generation and return its final output."""
    from vllm.inputs import tokens_input

    request_id = next_request_id(tag)
    prompt = tokens_input(list(prompt_token_ids))
    return await final_output(engine, engine.generate(prompt, params, request_id), request_id)


async def final_output(engine: AsyncLLM, stream: AsyncIterator[Out], request_id: str) -> Out:
    """Drain an engine output stream and return its last item.

    Cancellation or any error aborts the request in the engine before propagating, so a
    cancelled search leaves no unfinished requests behind.
    """
    final = None
    try:
        async for output in stream:
            final = output
    except BaseException:
        await asyncio.shield(engine.abort(request_id))
        raise
    if final is None:
        raise RuntimeError(f"engine returned no output for request {request_id}")
    return final
