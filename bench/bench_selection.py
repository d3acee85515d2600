"""One ETS selection (problem + exact solve + re-allocation): ours vs the original PuLP + CBC.

Both run on the same random frontiers in the same process, back to back, and must reach the same
objective value. Three kinds of frontier per width: coverage off (no cluster labels), singleton
clusters (every candidate its own cluster), and the general case (K ~ W/2 clusters). Usage:

    python bench/bench_selection.py [--widths 16 64 256] [--repeats 20] [--seed 0]
                                    [--kinds off singletons general] [--parallel 200]

"ours" = ets_async.core.select on _core.ets_instance (Rust builds the problem; tree problems come
back solved by the tree DP, the general case goes to ets_async.solver.solve_program with highspy)
-> EtsInstance.reallocate. "PuLP+CBC" = the original's approach in plain Python: ancestors by
walking parent pointers, REBASE outcome scores, one pulp.LpVariable per x/y/c, the y-linking written
per (ancestor, descendant) pair, solved by PULP_CBC_CMD(msg=0), then the REBASE re-allocation.
"""

from __future__ import annotations

import argparse
import math
import resource
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pulp
from ets_async import _core, core
from ets_async.search.loop import available_cores

LAMBDA_S = {16: 1.5, 64: 1.4, 256: 1.45}  # SPEC §9 defaults per width
LAMBDA_B = 1.0
TEMPERATURE = 0.2


def random_case(rng: np.random.Generator, width: int, kind: str = "general") -> dict:
    """A frontier of `width` candidates at depth 3-8, uneven branching, PRM-like scores.

    Cluster labels by ``kind``: "general" K ~ W/2 clusters, "singletons" one per candidate, "off"
    none (coverage term disabled).
    """
    depth = int(rng.integers(3, 9))
    parents, level = [-1], [0]
    for d in range(1, depth + 1):
        size = width if d == depth else int(rng.integers(max(1, width // 4), width + 1))
        weights = rng.dirichlet(np.full(len(level), 0.7))  # some parents get many children
        chosen = rng.choice(len(level), size=size, p=weights)
        new = []
        for k in chosen:
            parents.append(level[int(k)])
            new.append(len(parents) - 1)
        level = new
    raw = rng.integers(0, max(1, width // 2), width)
    _, labels = np.unique(raw, return_inverse=True)
    cluster_labels = {"general": labels.tolist(), "singletons": list(range(width)), "off": None}[kind]
    return dict(
        parents=parents,
        candidates=level,
        scores=rng.beta(4, 2, width).round(4).tolist(),
        cluster_labels=cluster_labels,
        budget=width,
        lambda_b=LAMBDA_B,
        lambda_s=LAMBDA_S.get(width, 1.45),
        softmax_temperature=TEMPERATURE,
    )


# --- ours ------------------------------------------------------------------------------------


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def ours(case: dict) -> tuple[list[bool], list[int], float, float, float, float]:
    """kept, counts, build s (Rust: problem, and the DP for tree problems), solve s (HiGHS; 0 for
    tree problems) + re-allocation, total wall s, total CPU s."""
    c0 = time.process_time()
    t0 = time.perf_counter()
    instance = _core.ets_instance(**case)
    t1 = time.perf_counter()
    selection = core.select(instance)
    t2 = time.perf_counter()
    return selection.kept, selection.counts, t1 - t0, t2 - t1, t2 - t0, time.process_time() - c0


# --- the original approach, in plain Python --------------------------------------------------


def _sequential_ceil(scores: list[float], order: list[int], budget: int, t: float) -> list[int]:
    """REBASE's rule in float32 (the original used torch float32)."""
    counts = [0] * len(scores)
    e = {i: np.float32(math.exp(scores[i] / t)) for i in order}
    total = np.float32(sum(e.values()))
    b = budget
    for i in order:
        if b <= 0:
            break
        n = min(math.ceil(float(np.float32(b) * e[i] / total)), b)
        counts[i] = n
        b -= n
        total = np.float32(total - e[i])
    return counts


def pulp_cbc(case: dict) -> tuple[list[bool], list[int], float, float]:
    """Returns kept, counts, wall seconds, CPU seconds (this process + the CBC subprocess)."""
    c0 = time.process_time() + _children_cpu()
    t0 = time.perf_counter()
    parents, cands, scores = case["parents"], case["candidates"], case["scores"]
    budget, lam_b, lam_s, t = case["budget"], case["lambda_b"], case["lambda_s"], case["softmax_temperature"]
    labels = case["cluster_labels"]
    n = len(cands)
    coverage = labels is not None and lam_s > 0
    # Ancestors and their candidate descendants, by walking parent pointers.
    descendants: dict[int, list[int]] = {}
    for i, c in enumerate(cands):
        v = parents[c]
        while v != -1:
            descendants.setdefault(v, []).append(i)
            v = parents[v]
    m = len(descendants)
    # Outcome scores: REBASE over all candidates, sorted(reverse=True).
    alloc = _sequential_ceil(scores, sorted(range(n), key=lambda i: scores[i], reverse=True), budget, t)
    outcome = [a / sum(alloc) for a in alloc]
    cost = 1.0 / (m + n)
    coef = -lam_b if lam_b != 0 else 1e-4
    clusters = sorted(set(labels)) if coverage else []
    k = max(1, len(clusters))

    prob = pulp.LpProblem("ets", pulp.LpMaximize)
    x = [pulp.LpVariable(f"x_{i}", cat="Binary") for i in range(n)]
    y = {j: pulp.LpVariable(f"y_{j}", cat="Binary") for j in descendants}
    c = {kk: pulp.LpVariable(f"c_{kk}", cat="Binary") for kk in clusters}
    prob += (
        pulp.lpSum(outcome[i] * x[i] for i in range(n))
        + coef * cost * (pulp.lpSum(y.values()) + pulp.lpSum(x))
        + (lam_s / k) * pulp.lpSum(c.values())
    )
    for j, below in descendants.items():
        prob += y[j] <= pulp.lpSum(x[i] for i in below)
        for i in below:
            prob += y[j] >= x[i]
    for kk in clusters:
        prob += pulp.lpSum(x[i] for i in range(n) if labels[i] == kk) >= c[kk]
    prob += pulp.lpSum(x) >= 1
    prob.solve(pulp.PULP_CBC_CMD(msg=0))
    if pulp.LpStatus[prob.status] != "Optimal":
        raise RuntimeError(f"CBC: {pulp.LpStatus[prob.status]}")
    kept = [v.varValue is not None and v.varValue > 0.5 for v in x]
    # Re-allocation over the kept nodes: sorted ascending then reversed.
    order = [i for i in sorted(range(n), key=lambda i: scores[i])[::-1] if kept[i]]
    counts = _sequential_ceil(scores, order, budget, t)
    return kept, counts, time.perf_counter() - t0, time.process_time() + _children_cpu() - c0


def p90_of(values: list[float]) -> float:
    return sorted(values)[int(0.9 * (len(values) - 1))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--repeats", type=int, default=20, help="random frontiers per width and kind")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kinds", nargs="+", default=["off", "singletons", "general"],
                    choices=["off", "singletons", "general"])
    ap.add_argument("--parallel", type=int, default=200, metavar="N",
                    help="then N selections per kind at the largest width, 1 thread vs the selection pool (0: skip)")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)

    warm = random_case(rng, 16)
    ours(warm)
    pulp_cbc(warm)

    header = (
        f"{'kind':>10} {'width':>5} {'exact':>5} {'cols':>5} {'rows':>5} {'K':>4} | {'build':>7} {'solve':>7}"
        f" {'total':>7} {'p90':>7} | {'PuLP+CBC':>9} | {'ratio':>6} || {'cpu ours':>8} {'p90':>7} {'cpu PuLP':>9}"
        f" {'ratio':>6}"
    )
    print("median ms per selection, wall clock, then CPU time (ours: this process; PuLP+CBC: this process")
    print("+ the CBC subprocess). build = Rust problem (+ tree DP); solve = HiGHS (general case) + re-allocation;")
    print("exact = share of instances solved by the tree DP; cols/rows/K = median HiGHS program size")
    print(header)
    print("-" * len(header))
    for kind in args.kinds:
        for width in args.widths:
            build, solve, total, base, cols, rows, ks, exact = [], [], [], [], [], [], [], []
            cpu_o, cpu_p = [], []
            for _ in range(args.repeats):
                case = random_case(rng, width, kind)
                kept_o, counts_o, tb, ts, tt, co = ours(case)
                kept_p, counts_p, tp, cp = pulp_cbc(case)
                cpu_o.append(co)
                cpu_p.append(cp)
                instance = _core.ets_instance(**case)
                obj_o, obj_p = instance.objective(kept_o), instance.objective(kept_p)
                assert abs(obj_o - obj_p) <= 1e-6, (kind, width, obj_o, obj_p)
                assert sum(counts_o) == sum(counts_p) == width
                program = instance.program()
                exact.append(instance.kept is not None)
                build.append(tb)
                solve.append(ts)
                total.append(tt)
                base.append(tp)
                cols.append(program.num_col)
                rows.append(program.num_row)
                ks.append(instance.num_clusters)
            med = statistics.median
            p90 = p90_of(total)
            print(
                f"{kind:>10} {width:>5} {sum(exact) / len(exact):>5.0%} {med(cols):>5.0f} {med(rows):>5.0f}"
                f" {med(ks):>4.0f} | {1e3 * med(build):>7.3f} {1e3 * med(solve):>7.3f} {1e3 * med(total):>7.3f}"
                f" {1e3 * p90:>7.3f} | {1e3 * med(base):>9.2f} | {med(base) / med(total):>5.0f}x ||"
                f" {1e3 * med(cpu_o):>8.3f} {1e3 * p90_of(cpu_o):>7.3f} {1e3 * med(cpu_p):>9.2f}"
                f" {med(cpu_p) / med(cpu_o):>5.0f}x"
            )
    print("objective values equal (|diff| <= 1e-6) on every instance")
    if args.parallel:
        parallel(rng, max(args.widths), args.kinds, args.parallel)


def as_search_tree(case: dict) -> tuple[_core.SearchTree, list[int]]:
    """The case's tree as a live SearchTree (what the search loop selects on), and its candidates."""
    parents = case["parents"]
    children: dict[int, list[int]] = {}
    for v, p in enumerate(parents):
        if p >= 0:
            children.setdefault(p, []).append(v)
    score_of = dict(zip(case["candidates"], case["scores"], strict=True))
    tree = _core.SearchTree([1], case["budget"], 1 << 40)
    ids = {0: 0}  # random_case numbers the root 0 and every parent before its children
    for v in range(len(parents)):
        kids = children.get(v, [])
        if kids:
            new = tree.add_children(
                ids[v], [[7]] * len(kids), [score_of.get(k, 0.5) for k in kids], [False] * len(kids)
            )
            ids.update(zip(kids, new, strict=True))
    return tree, [ids[c] for c in case["candidates"]]


def parallel(rng: np.random.Generator, width: int, kinds: list[str], n: int) -> None:
    """Selections/s on one thread, then on the selection pool's thread count (one per available
    core), as the search loop makes them (``SearchTree.ets_instance``, nothing exported): the
    speed-up shows whether a selection holds the GIL (1x) or not (up to the core count)."""
    cores = available_cores()
    print(f"\nparallel selections at W={width}: {cores} available cores; the selection pool has {cores} threads"
          f" (asyncio's default executor would have min(32, cores + 4) = {min(32, cores + 4)})")
    for kind in kinds:
        cases = [random_case(rng, width, kind) for _ in range(n)]
        trees = [as_search_tree(case) for case in cases]

        def one(i: int) -> list[int]:
            tree, candidates = trees[i]  # noqa: B023 - runs within this iteration
            c = cases[i]  # noqa: B023
            args = (c["budget"], c["lambda_b"], c["lambda_s"], c["softmax_temperature"])
            return core.select(tree.ets_instance(candidates, c["cluster_labels"], *args)).counts

        t0 = time.perf_counter()
        sequential = [one(i) for i in range(n)]
        t1 = time.perf_counter()
        with ThreadPoolExecutor(cores) as pool:
            threaded = list(pool.map(one, range(n)))
        t2 = time.perf_counter()
        assert threaded == sequential == [core.select(_core.ets_instance(**c)).counts for c in cases]
        print(f"{kind:>10}: 1 thread {n / (t1 - t0):8.0f}/s, {cores} threads {n / (t2 - t1):8.0f}/s,"
              f" speed-up {(t1 - t0) / (t2 - t1):.2f}x")


if __name__ == "__main__":
    main()
