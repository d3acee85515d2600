"""One ETS selection (program + exact solve + re-allocation): Rust + HiGHS vs the original PuLP + CBC.

Both run on the same random frontiers in the same process, back to back, and must reach the same
objective value. Usage:

    python bench/bench_selection.py [--widths 16 64 256] [--repeats 20] [--seed 0]

"ours" = ets_async._core.ets_program (Rust) -> ets_async.solver.solve_program (highspy) ->
_core.reallocate_kept. "PuLP+CBC" = the original's approach in plain Python: ancestors by walking
parent pointers, REBASE outcome scores, one pulp.LpVariable per x/y/c, the y-linking written per
(ancestor, descendant) pair, solved by PULP_CBC_CMD(msg=0), then the REBASE re-allocation.
"""

from __future__ import annotations

import argparse
import math
import resource
import statistics
import time

import numpy as np
import pulp

from ets_async import _core
from ets_async.solver import solve_program

LAMBDA_S = {16: 1.5, 64: 1.4, 256: 1.45}  # ets_spec §9 defaults per width
LAMBDA_B = 1.0
TEMPERATURE = 0.2


def random_case(rng: np.random.Generator, width: int) -> dict:
    """A frontier of `width` candidates at depth 3-8, uneven branching, PRM-like scores, K ~ W/2."""
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
    return dict(
        parents=parents,
        candidates=level,
        scores=rng.beta(4, 2, width).round(4).tolist(),
        cluster_labels=labels.tolist(),
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
    c0 = time.process_time()
    t0 = time.perf_counter()
    program = _core.ets_program(**case)
    t1 = time.perf_counter()
    kept = solve_program(program)
    t2 = time.perf_counter()
    counts = _core.reallocate_kept(case["scores"], kept, case["budget"], case["softmax_temperature"])
    t3 = time.perf_counter()
    return kept, counts, t1 - t0, t2 - t1, t3 - t0, time.process_time() - c0


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
    clusters = sorted(set(labels))
    k = len(clusters)

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


def objective(case: dict, kept: list[bool]) -> float:
    """The §5.5 objective of a keep-set, from the Rust program's column costs."""
    program = _core.ets_program(**case)
    n, ancestors = program["num_x"], program["ancestors"]
    parents, cands = case["parents"], case["candidates"]
    live: set[int] = set()
    for i, cnd in enumerate(cands):
        if kept[i]:
            v = parents[cnd]
            while v != -1:
                live.add(v)
                v = parents[v]
    covered = {case["cluster_labels"][i] for i in range(n) if kept[i]}
    distinct = sorted(set(case["cluster_labels"]))
    values = (
        [1.0 if k else 0.0 for k in kept]
        + [1.0 if a in live else 0.0 for a in ancestors]
        + [1.0 if lab in covered else 0.0 for lab in distinct][: program["num_clusters"]]
    )
    return -float(np.dot(program["col_cost"], values)) - program["offset"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--repeats", type=int, default=20, help="random frontiers per width")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)

    warm = random_case(rng, 16)
    ours(warm)
    pulp_cbc(warm)

    header = (
        f"{'width':>5} {'cols':>5} {'rows':>5} {'K':>4} | {'build':>7} {'solve':>7} {'total':>7}"
        f" {'p90':>7} | {'PuLP+CBC':>9} | {'ratio':>6} || {'cpu ours':>8} {'cpu PuLP':>9} {'ratio':>6}"
    )
    print("median ms per selection (ours: Rust program + HiGHS + re-allocation); wall clock, then")
    print("CPU time (ours: this process; PuLP+CBC: this process + the CBC subprocess)")
    print(header)
    print("-" * len(header))
    for width in args.widths:
        build, solve, total, base, cols, rows, ks = [], [], [], [], [], [], []
        cpu_o, cpu_p = [], []
        for _ in range(args.repeats):
            case = random_case(rng, width)
            kept_o, counts_o, tb, ts, tt, co = ours(case)
            kept_p, counts_p, tp, cp = pulp_cbc(case)
            cpu_o.append(co)
            cpu_p.append(cp)
            obj_o, obj_p = objective(case, kept_o), objective(case, kept_p)
            assert abs(obj_o - obj_p) <= 1e-6, (width, obj_o, obj_p)
            assert sum(counts_o) == sum(counts_p) == width
            program = _core.ets_program(**case)
            build.append(tb)
            solve.append(ts)
            total.append(tt)
            base.append(tp)
            cols.append(program["num_col"])
            rows.append(program["num_row"])
            ks.append(program["num_clusters"])
        med = statistics.median
        p90 = sorted(total)[int(0.9 * (len(total) - 1))]
        print(
            f"{width:>5} {med(cols):>5.0f} {med(rows):>5.0f} {med(ks):>4.0f} | {1e3 * med(build):>7.3f}"
            f" {1e3 * med(solve):>7.3f} {1e3 * med(total):>7.3f} {1e3 * p90:>7.3f} |"
            f" {1e3 * med(base):>9.2f} | {med(base) / med(total):>5.1f}x ||"
            f" {1e3 * med(cpu_o):>8.3f} {1e3 * med(cpu_p):>9.2f} {med(cpu_p) / med(cpu_o):>5.1f}x"
        )
    print("objective values equal (|diff| <= 1e-6) on every instance")


if __name__ == "__main__":
    main()
