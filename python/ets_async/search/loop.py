"""The one per-problem search loop shared by every method:
expand the frontier -> score (and embed) each child -> allocate children -> repeat (SPEC §3.2).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..answers import extract_answer
from ..backends.protocols import Policy, ProblemScope, Sampling, ScoreRequest, current_scope
from ..config import SearchConfig
from ..core import SearchTree
from ..errors import ProblemError
from ..metrics import SearchMetrics
from ..stopping import settled
from ..types import Candidate, Problem, ProblemResult, Step, TreeRecord
from ..voting import select_answer
from . import METHODS
from .method import Frontier


@dataclass(frozen=True)
class SearchContext:
    """The backends one search talks to. ``score`` and ``embed`` take a list of items and return one
    future per item: usually ``MicroBatcher.submit_many``."""

    config: SearchConfig
    policy: Policy
    score: Callable[[Sequence[ScoreRequest]], list[asyncio.Future[float | None]]]
    embed: Callable[[Sequence[str]], list[asyncio.Future[np.ndarray]]] | None
    max_model_len: int | None = None
    step_logprobs: bool = False  # the PRM reads the policy's token log-probabilities


@dataclass(frozen=True)
class _Grown:
    """One node's new children with their PRM scores (None: dropped) and embeddings, and when
    (``time.perf_counter``) the policy returned them, their scores arrived, their embeddings arrived."""

    parent: int
    steps: list[Step]
    scores: list[float | None]
    embeddings: list[np.ndarray | None]
    generated_at: float
    scored_at: float
    embedded_at: float


def available_cores() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def selection_pool() -> ThreadPoolExecutor:
    """The threads that run the problems' selections (methods with ``offload``), one per available core.

    Not ``asyncio.to_thread``: the default executor (min(32, cores + 4) threads) is shared with
    grading and answer selection, so a round of selections could queue behind slow grading calls.
    Selections release the GIL in Rust (the ETS problem, the tree DP, the re-allocation) and in
    HiGHS, so these threads run on separate cores.
    """
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=available_cores(), thread_name_prefix="ets-select")
        return _pool


@contextlib.contextmanager
def selection_threads(initializer: Callable[[], None]) -> Iterator[None]:
    """While the block runs, selections run on new threads (as many) that first call ``initializer``
    (a profiler, say); the threads are joined on exit and the usual pool comes back."""
    global _pool
    pool = ThreadPoolExecutor(available_cores(), "ets-select", initializer=initializer)
    with _pool_lock:
        previous, _pool = _pool, pool
    try:
        yield
    finally:
        with _pool_lock:
            _pool = previous
        pool.shutdown(wait=True)


def request_seed(seed: int, problem_id: str, node: int, draw: int = 0) -> int:
    """A per-request seed that depends only on (seed, problem id, node id, and how many times the node
    was expanded before: the root, once per wave), never on timing."""
    key = f"{seed}:{problem_id}:{node}" if draw == 0 else f"{seed}:{problem_id}:{node}:{draw}"
    digest = hashlib.blake2b(key.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


class ProblemSearch:
    """The state of one problem's search; ``run`` returns its result."""

    def __init__(self, problem: Problem, ctx: SearchContext) -> None:
        self.problem = problem
        self.ctx = ctx
        self.config = ctx.config
        self.method = METHODS[self.config.method](self.config)
        self.metrics = SearchMetrics()
        self.scope = ProblemScope(problem.id)  # what routing backends key this problem's requests on
        self.step_text: dict[int, str] = {0: ""}
        self.embedding: dict[int, np.ndarray] = {}
        self.candidate: dict[int, Candidate] = {}  # per finished node, built once
        self.tree: SearchTree  # made once the prompt is rendered (``_search``)
        self.started = time.perf_counter()

    async def run(self) -> ProblemResult:
        current_scope.set(self.scope)  # this task's (and its children's) engine calls belong to this problem
        self.started = time.perf_counter()
        try:
            return await self._search()
        finally:  # also when the search fails: its error result carries the moves too
            self.metrics.endpoint_moves = self.scope.endpoint_moves

    async def result_so_far(self) -> ProblemResult:
        """The anytime answer of a search stopped before its end (``run`` was cancelled at a
        deadline): the vote over the trajectories finished so far (``answer`` None when none has),
        with ``stop_reason`` "deadline". A cancellation lands at one of the loop's awaits, where the
        tree is whole."""
        self.metrics.stop_reason = "deadline"
        self.metrics.wall_time_s = time.perf_counter() - self.started
        if not hasattr(self, "tree"):  # stopped before its prompt was rendered: nothing to vote on
            cfg = self.config
            return ProblemResult(
                id=self.problem.id, problem=self.problem.text, method=cfg.method, width=cfg.width,
                reference=self.problem.reference, metrics=self.metrics.summary(),
            )
        return await self._result()

    async def _search(self) -> ProblemResult:
        cfg = self.config
        prompt = self.ctx.policy.render(self.problem.text, cfg.system_prompt, cfg.prompt_template)
        limit = self.ctx.max_model_len
        if limit is not None and len(prompt) + cfg.max_tokens > limit:
            raise ProblemError(
                f"problem {self.problem.id}: prompt of {len(prompt)} tokens plus max_tokens={cfg.max_tokens} "
                f"exceeds the engine's max_model_len={limit}"
            )
        tree = SearchTree(prompt, cfg.width, cfg.max_tokens)
        self.tree = tree
        self.metrics.root_prompt_tokens = len(prompt)
        wave = self._wave_size()
        started_trajectories = 0  # children of the root so far: the waves never start more than the width
        expanding: list[int] = []
        counts: list[int] = []
        self.metrics.stop_reason = "complete"
        while True:
            if not expanding:  # a wave starts: the root gets its share of the budget (SPEC §3.4, §5.8)
                if started_trajectories >= cfg.width:
                    break
                counts = [min(wave, cfg.width - started_trajectories)]
                expanding = [0]
                started_trajectories += counts[0]
                self.metrics.waves += 1
            depth = tree.depth(expanding[0]) + 1
            children = await self._expand_all(expanding, counts)
            frontier, retired = tree.retire(children)
            self.method.retired(tree, retired)
            self.metrics.depth = max(self.metrics.depth, depth)
            wave_over = not frontier or tree.remaining_budget <= 0 or depth == cfg.max_depth
            goes_on = not wave_over or started_trajectories < cfg.width
            test_now = wave_over if self.method.independent else any(tree.is_finished(v) for v in retired)
            if goes_on and test_now and await self._settled():
                self.metrics.stop_reason = "settled"
                break
            expanding = []
            if not wave_over:
                counts = await self._allocate(frontier, depth)
                if any(counts):
                    expanding = frontier
        self.metrics.wall_time_s = time.perf_counter() - self.started
        return await self._result()

    def _wave_size(self) -> int:
        """Trajectories per wave from the root: the whole width, unless a stop rule is on and the
        method's trajectories are independent samples (best-of-N), which are then drawn in waves and
        tested between them. A tree method cannot start again from the root without giving up the
        tree it grew, so it keeps one wave and tests whenever trajectories finish."""
        cfg = self.config
        if cfg.stop_when == "budget" or not self.method.independent:
            return cfg.width
        return cfg.wave_size or cfg.stop_min_finished

    async def _settled(self) -> bool:
        """Whether the finished trajectories settle the answer (``stopping.settled``).

        Only finished trajectories vote. A live leaf's partial text has no final answer (the last
        number in it is an intermediate result, not what it will conclude), so "every live leaf
        agrees" cannot be read from it; the live leaves are abandoned when the rule holds, and the
        settings (share or confidence, and ``stop_min_finished``) say how sure that must be."""
        cfg = self.config
        votes = [(c.answer, c.step_scores) for c in self._candidates()]
        return await asyncio.to_thread(settled, votes, cfg, cfg.answer_selection, cfg.score_aggregation)

    async def _expand_all(self, nodes: Sequence[int], counts: Sequence[int]) -> list[int]:
        """Expand every node with a nonzero count concurrently; insert children in frontier order,
        so node ids (and the seeds derived from them) never depend on completion order."""
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(self._grow(v, k)) for v, k in zip(nodes, counts, strict=True) if k > 0]
        grown_all = [t.result() for t in tasks]
        self._record_waits(grown_all)
        children: list[int] = []
        for grown in grown_all:
            kept = [i for i, s in enumerate(grown.scores) if s is not None]
            self.metrics.prm_dropped += len(grown.steps) - len(kept)
            ids = self.tree.add_children(
                grown.parent,
                [list(grown.steps[i].token_ids) for i in kept],
                [float(grown.scores[i]) for i in kept],  # type: ignore[arg-type]
                [grown.steps[i].finished for i in kept],
            )
            for node, i in zip(ids, kept, strict=True):
                self.step_text[node] = grown.steps[i].text
                if grown.embeddings[i] is not None:
                    self.embedding[node] = grown.embeddings[i]  # type: ignore[assignment]
            children.extend(ids)
        return children

    async def _grow(self, node: int, n: int) -> _Grown:
        cfg, tree, metrics = self.config, self.tree, self.metrics
        prompt = tree.prompt_token_ids(node)
        sampling = Sampling(
            max_tokens=min(cfg.max_step_tokens, cfg.max_tokens - tree.cum_tokens(node)),
            temperature=cfg.sampling_temperature,
            top_p=cfg.top_p,
            stop=cfg.step_delimiter,
            seed=request_seed(cfg.seed, self.problem.id, node, self.metrics.waves - 1 if node == 0 else 0),
            logprobs=self.ctx.step_logprobs,
        )
        expansion = await self.ctx.policy.expand(prompt, n, sampling)
        generated_at = time.perf_counter()
        metrics.policy_calls += 1
        metrics.prompt_tokens += expansion.prompt_tokens
        metrics.prefix_cached_tokens += expansion.cached_tokens
        metrics.preemptions += expansion.preemptions
        steps = [self._mark_answers(s) for s in expansion.steps]
        metrics.generated_steps += len(steps)
        metrics.generated_tokens += sum(len(s.token_ids) for s in steps)

        history = tuple(self.step_text[v] for v in tree.path(node)[1:])
        prefix = tuple(prompt)
        requests = [
            ScoreRequest(prefix + s.token_ids, self.problem.text, history + (s.text,), self.scope, s.logprobs)
            for s in steps
        ]
        embed = self.ctx.embed if self.method.needs_embeddings else None
        to_embed = [i for i, s in enumerate(steps) if self._may_be_candidate(node, s)] if embed else []
        score_futures = self.ctx.score(requests)
        embed_futures = embed([steps[i].text for i in to_embed]) if embed and to_embed else []
        try:  # plain futures resolved by the batchers: no task per step
            scores = [await f for f in score_futures]
            scored_at = time.perf_counter()
            embeddings: list[np.ndarray | None] = [None] * len(steps)
            for i, pending in zip(to_embed, embed_futures, strict=True):
                embeddings[i] = await pending
            embedded_at = time.perf_counter() if embed_futures else scored_at
        except BaseException:  # an error or a cancellation: nobody waits for the rest
            for f in score_futures:
                f.cancel()
            for g in embed_futures:
                g.cancel()
            raise
        metrics.prm_calls += len(requests)
        metrics.prm_tokens += sum(len(r.token_ids) for r in requests)
        metrics.embedded_steps += len(to_embed)
        return _Grown(node, steps, scores, embeddings, generated_at, scored_at, embedded_at)

    def _record_waits(self, grown: list[_Grown]) -> None:
        """What a round waited for once its last expansion came back from the policy: first the
        PRM's last scores, then the embeddings still missing after them. Only this tail delays the
        next round; scoring and embedding that overlap generation cost the search no time."""
        if not grown:
            return
        generated = max(g.generated_at for g in grown)
        scored = max(g.scored_at for g in grown)
        self.metrics.score_wait_s += scored - generated
        self.metrics.embed_wait_s += max(g.embedded_at for g in grown) - scored

    def _may_be_candidate(self, parent: int, step: Step) -> bool:
        """Whether a new child of ``parent`` can reach a selection, so that its embedding is needed: a
        step that ``tree.retire`` will retire or that sits at the last depth never does. Embeddings
        cost the engine's own cores on CPU (bench/bench_cpu_engine.py)."""
        tree = self.tree
        return tree.depth(parent) + 1 < self.config.max_depth and not tree.would_retire(
            parent, len(step.token_ids), step.finished
        )

    def _mark_answers(self, step: Step) -> Step:
        """A step that states the final answer ends its trajectory (SPEC §2.4)."""
        if step.finished or not any(m in step.text for m in self.config.answer_markers):
            return step
        return dataclasses.replace(step, finished=True)

    async def _allocate(self, frontier: list[int], depth: int) -> list[int]:
        tree, metrics = self.tree, self.metrics
        metrics.record_kv(*tree.kv(frontier, self.config.kv_block_size), sum(tree.step_len(v) for v in frontier))
        embeddings = None
        if self.method.needs_embeddings:
            embeddings = np.stack([self.embedding[v] for v in frontier])
        view = Frontier(
            tree=tree,
            candidates=frontier,
            scores=[tree.score(v) for v in frontier],
            budget=tree.remaining_budget,
            depth=depth,
            embeddings=embeddings,
            step_texts=[self.step_text[v] for v in frontier],
        )
        started = time.perf_counter()
        if self.method.offload:
            allocation = await asyncio.get_running_loop().run_in_executor(selection_pool(), self.method.allocate, view)
        else:
            allocation = self.method.allocate(view)
        metrics.selection_time_s += time.perf_counter() - started
        metrics.selections += 1
        metrics.solver_fallbacks += allocation.solver_fallback
        metrics.record_allocation(allocation.counts, allocation.clusters)
        return allocation.counts

    def _candidates(self) -> list[Candidate]:
        """The finished trajectories so far, in node order."""
        tree = self.tree
        for node in tree.finished_nodes():
            if node not in self.candidate:
                text = "".join(self.step_text[v] for v in tree.path(node)[1:])
                self.candidate[node] = Candidate(
                    text, extract_answer(text), tuple(tree.path_scores(node)), tree.cum_tokens(node), node
                )
        return [self.candidate[v] for v in tree.finished_nodes()]

    async def _result(self) -> ProblemResult:
        cfg, tree = self.config, self.tree
        self.metrics.endpoint_moves = self.scope.endpoint_moves
        candidates = self._candidates()
        self.metrics.finished = len(candidates)
        answer = await asyncio.to_thread(
            select_answer,
            [(c.answer, c.step_scores) for c in candidates],
            cfg.answer_selection,
            cfg.score_aggregation,
        )
        return ProblemResult(
            id=self.problem.id,
            problem=self.problem.text,
            method=cfg.method,
            width=cfg.width,
            reference=self.problem.reference,
            answer=answer,
            candidates=candidates,
            tree=TreeRecord(
                parents=tuple(tree.parents()),
                step_tokens=tuple(tree.step_lengths(False)),
                scores=tuple(tree.score(v) for v in range(tree.num_nodes)),
                finished=tuple(tree.is_finished(v) for v in range(tree.num_nodes)),
                texts=tuple(self.step_text[v] for v in range(tree.num_nodes)),
            ),
            metrics=self.metrics.summary(),
        )
