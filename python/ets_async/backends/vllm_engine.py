"""The in-process vLLM engine. ``InProcessEngine`` owns an AsyncLLM started from an EngineConfig: it
runs each request to completion, with its abort on cancellation, error or time limit (the only
place that owns engine request ids), and says from the engine's processes why it died.
``EngineTransport`` is the PRM transport over one."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar

from .. import watchdog
from ..config import Dtype, EngineConfig
from ..errors import BackendError, EngineDiedError, RequestTimeoutError
from .protocols import PrefillCount, ProblemScope

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

    from vllm import PoolingRequestOutput, RequestOutput, SamplingParams
    from vllm.pooling_params import PoolingParams
    from vllm.v1.engine.async_llm import AsyncLLM

    from .engine_stats import PreemptionLog

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
    """The settings vLLM reads from the environment when it spawns the engine: on CPU the KV cache
    size and the worker's cores (variables the user already set win), and ``config.devices`` as
    CUDA_VISIBLE_DEVICES (the config wins: it names this engine's devices). The process environment
    is restored afterwards."""
    wanted = {"VLLM_CPU_KVCACHE_SPACE": str(config.cpu_kv_cache_gib)}
    if on_cpu:
        wanted["VLLM_CPU_OMP_THREADS_BIND"] = cpu_binding(config.cpu_cores)
    changes = {key: value for key, value in wanted.items() if key not in os.environ}
    if config.devices is not None:
        changes["CUDA_VISIBLE_DEVICES"] = config.devices
    saved = {key: os.environ.get(key) for key in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class InProcessEngine:
    """An in-process vLLM engine (``llm``, an AsyncLLM) and what this process keeps about it: its
    preemption counts per request, its processes (pid, start time, title: the EngineCore and its
    workers) as they were once it was up, and why it died, as first seen.

    Every request goes through ``generate`` or ``encode``, which own its id and abort it where it
    is awaited. ``start`` makes one; ``shutdown`` stops it."""

    def __init__(self, llm: AsyncLLM, preemptions: PreemptionLog) -> None:
        self.llm = llm
        self.preemptions = preemptions
        self.processes = [member for core in self._cores() if core.pid for member in watchdog.process_tree(core.pid)]
        self._failure: str | None = None
        self._shut_down = False

    @classmethod
    def start(
        cls, config: EngineConfig, model: str, *, runner: Literal["generate", "pooling"] = "generate"
    ) -> InProcessEngine:
        """An AsyncLLM with prefix caching on. On CPU the KV cache size comes from ``cpu_kv_cache_gib``,
        and chunked prefill is off: vLLM rewinds a seeded request's random generator after a partial
        prefill, which CPU generators cannot do ("CPU Generator does not use offset" kills the engine
        once many seeded requests share a step's token budget). The worker runs on ``cpu_cores``.

        A pooling engine pools every token (``ALL``) rather than vLLM's ``STEP`` default for process
        reward models: the same rows, but vLLM supports prefix caching only with ``ALL``, and with it a
        PRM request reads the trajectory's scored prefix from the cache (``EngineTransport.pool``).

        The engine's processes die with this process, however it dies (``watchdog``), and its
        preemptions are counted per request (``PreemptionLog``)."""
        import torch
        from vllm.config.pooler import PoolerConfig
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        from .engine_stats import PreemptionLog

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
            enable_chunked_prefill=not on_cpu,
            max_num_batched_tokens=max(config.max_model_len, 2048) if on_cpu else None,
            num_gpu_blocks_override=config.num_kv_blocks,
            disable_log_stats=False,
            pooler_config=PoolerConfig(tok_pooling_type="ALL") if runner == "pooling" else None,
        )
        preemptions = PreemptionLog()
        with _engine_environment(config, on_cpu), watchdog.adopt_children():
            llm = AsyncLLM.from_engine_args(args, stat_loggers=[lambda vllm_config, index: preemptions])
        return cls(llm, preemptions)

    def _cores(self) -> list[BaseProcess]:
        """The engine's EngineCore processes (multiprocessing handles: they know their exit codes)."""
        manager = getattr(getattr(self.llm.engine_core, "resources", None), "engine_manager", None)
        return list(getattr(manager, "processes", []))

    def failure(self) -> str | None:
        """Why the engine cannot serve, naming the process that ended and how; None while it runs.

        An EngineCore killed by a signal is the cause (its workers die with it); otherwise the workers
        that died are (an EngineCore outlives a dead worker only to shut down); otherwise an EngineCore
        that exited with an error code. The first answer is kept: processes killed later while the dead
        engine is shut down do not change it. Once the cause is known, what is left of the engine is
        SIGKILLed: a Worker whose EngineCore was killed is nobody's child any more, and vLLM's own
        shutdown cannot find it. An engine that ``shutdown`` stopped says so.
        """
        if self._failure is not None:
            return self._failure
        if self._shut_down:
            return "the vLLM engine was shut down"
        if not self.llm.errored:
            return None
        cores = [(core.name, core.pid, core.exitcode) for core in self._cores()]
        core_pids = {pid for _, pid, _ in cores}
        dead_workers = [
            (pid, title)
            for pid, start, title in self.processes
            if pid not in core_pids and not watchdog.running(pid, start)
        ]
        if killed := [(name, pid, -code) for name, pid, code in cores if code is not None and code < 0]:
            causes = [
                f"its {name} process (pid {pid}) was killed by {signal.Signals(sig).name}" for name, pid, sig in killed
            ]
        elif dead_workers:
            causes = [
                f"its {title.removeprefix('VLLM::') or 'engine'} process (pid {pid}) died"
                for pid, title in dead_workers
            ]
        elif failed := [(name, pid, code) for name, pid, code in cores if code]:
            causes = [f"its {name} process (pid {pid}) exited with code {code}" for name, pid, code in failed]
        else:
            return "the vLLM engine stopped (it was shut down, or it failed: its log says why)"
        self._failure = "the vLLM engine died: " + "; ".join(causes)
        for pid, start, _ in self.processes:
            if watchdog.running(pid, start):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        return self._failure

    def shutdown(self) -> None:
        """Stop the engine and its processes; a second call does nothing. A death not yet seen is
        named first (``failure``), so that the processes this stops are not taken for its cause."""
        if self._shut_down:
            return
        self.failure()
        self._shut_down = True
        self.llm.shutdown()

    async def generate(
        self, prompt_token_ids: Sequence[int], params: SamplingParams, *, tag: str, timeout_s: float | None = None
    ) -> tuple[RequestOutput, int]:
        """Generate from one token-id prompt: its final output and how often it was preempted."""
        from vllm.inputs import tokens_input

        request_id = next_request_id(tag)
        stream = self.llm.generate(tokens_input(list(prompt_token_ids)), params, request_id)
        output = await self._final_output(stream, request_id, timeout_s)
        return output, self.preemptions.pop(request_id)

    async def encode(
        self, token_ids: Sequence[int], params: PoolingParams, *, tag: str, timeout_s: float | None = None
    ) -> PoolingRequestOutput:
        """Pool one token-id prompt: its final output."""
        from vllm.inputs import tokens_input

        request_id = next_request_id(tag)
        stream = self.llm.encode(tokens_input(list(token_ids)), params, request_id)
        return await self._final_output(stream, request_id, timeout_s)

    async def _final_output(self, stream: AsyncIterator[Out], request_id: str, timeout_s: float | None) -> Out:
        """Drain a request's output stream and return its last item.

        Cancellation, any error, or running past ``timeout_s`` aborts the request in the engine before
        propagating, so a cancelled search leaves no unfinished requests behind. Past the time limit
        this raises RequestTimeoutError; if the engine died, EngineDiedError naming the cause.
        """
        from vllm.v1.engine.exceptions import EngineDeadError

        final = None
        limit = asyncio.timeout(timeout_s)
        try:
            async with limit:
                async for output in stream:
                    final = output
        except BaseException as exc:
            dead = self.llm.errored or isinstance(exc, EngineDeadError)
            if dead and not isinstance(exc, asyncio.CancelledError):
                raise EngineDiedError(self.failure() or f"the vLLM engine died ({exc!r})") from None
            if not dead:
                await asyncio.shield(self.llm.abort(request_id))
            if limit.expired():
                raise RequestTimeoutError(
                    f"engine request {request_id} ran past its {timeout_s:g}s time limit "
                    "(request_timeout_s) and was aborted"
                ) from None
            raise
        if final is None:
            raise RuntimeError(f"engine returned no output for request {request_id}")
        return final


class EngineTransport:
    """The PRM transport of an in-process engine (``protocols.ScoringTransport``), counting the
    prompt tokens it sends and those the engine read from its prefix cache (``prefill``)."""

    def __init__(self, engine: InProcessEngine, *, request_timeout_s: float | None = None) -> None:
        self.engine = engine
        self.request_timeout_s = request_timeout_s
        self.prefill = PrefillCount()

    async def label_logprobs(
        self, token_ids: Sequence[int], label_ids: Sequence[int], *, scope: ProblemScope | None = None
    ) -> dict[int, float]:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        params = SamplingParams(
            max_tokens=1,
            temperature=0.0,
            logprob_token_ids=list(label_ids),  # always returned, whatever their rank
            output_kind=RequestOutputKind.FINAL_ONLY,
        )
        output, _ = await self.engine.generate(token_ids, params, tag="prm", timeout_s=self.request_timeout_s)
        self.prefill.add(len(token_ids), output.num_cached_tokens or 0)
        logprobs = output.outputs[0].logprobs
        if not logprobs:
            raise BackendError("the engine returned no log-probabilities for the PRM's labels")
        return {token: logprob.logprob for token, logprob in logprobs[0].items()}

    async def pool(self, token_ids: Sequence[int], *, scope: ProblemScope | None = None) -> list[list[float]]:
        from vllm.pooling_params import PoolingParams

        # vLLM skips the prefix cache for token pooling by default, to return a row for every token;
        # reading it, the rows cover the tokens computed after the cached prefix (newest step included).
        params = PoolingParams(task="token_classify", skip_reading_prefix_cache=False)
        final = await self.engine.encode(token_ids, params, tag="prm", timeout_s=self.request_timeout_s)
        rows = final.outputs.data.tolist()
        self.prefill.add(len(token_ids), len(token_ids) - len(rows))
        return rows
