"""Solve one ETS integer program (``_core.EtsInstance.program()``: numpy arrays built in Rust) exactly
with HiGHS. Only the general case gets here: tree problems are solved by the Rust tree DP."""

from __future__ import annotations

import math
import os
import threading
from typing import Any

import numpy as np

from ets_async._core import EtsProgram
from ets_async.errors import SolverError
from ets_async.stdio import redirect_output

__all__ = ["SolverError", "solve_program"]

# Measured on W = 16..256 programs (bench/bench_selection.py, notes in bench/README.md):
# - presolve costs more than it saves on programs this small (3-5x slower);
# - the MIP feasibility-jump heuristic has a fixed cost of several ms per solve;
# - the LP relaxation is almost always integral already, and then it is the MIP optimum, so we solve
#   the LP first (dual simplex, ~1 ms at W=256) and run branch-and-bound only when it is fractional.
# mip_rel_gap = 0 and a tiny absolute gap keep the MIP exactly optimal: ties between keep-sets are
# common and the default 1e-4 relative gap would let HiGHS stop at a worse one.
_OPTIONS: dict[str, bool | int | float | str] = {
    "output_flag": False,
    "threads": 1,
    "random_seed": 0,
    "presolve": "off",
    "mip_heuristic_run_feasibility_jump": False,
    "mip_rel_gap": 0.0,
    "mip_abs_gap": 1e-10,
}

# A relaxed value this close to 0 or 1 counts as integral; the rounded point is then re-checked
# against every row before it is accepted.
_INTEGRAL_TOL = 1e-9
_FEAS_TOL = 1e-9


_first_instance = threading.Lock()
_banner_silenced = False


def _silence_banner() -> None:
    """HiGHS 1.16 prints a copyright banner to the C-level stdout when a process makes its first
    instance, whatever the options: make that first instance with stdout pointed at /dev/null."""
    global _banner_silenced
    with _first_instance:
        if _banner_silenced:
            return
        import highspy

        with redirect_output(os.devnull):
            highspy.Highs()
        _banner_silenced = True


_local = threading.local()


def _highs(time_limit_s: float | None) -> Any:
    """This thread's HiGHS instance, options set once; ``passModel`` replaces its model each call.

    One instance per thread keeps concurrent solves (from the selection pool) apart; reusing it
    saves making one per solve with its options and callbacks (about 0.1-0.4 ms measured, a tenth
    of a W=256 solve).
    """
    h = getattr(_local, "highs", None)
    if h is None:
        import highspy

        if not _banner_silenced:
            _silence_banner()
        h = highspy.Highs()
        for name, value in _OPTIONS.items():
            h.setOptionValue(name, value)
        _local.highs = h
    h.setOptionValue("time_limit", math.inf if time_limit_s is None else float(time_limit_s))
    return h


def _pass(h: Any, p: EtsProgram, integrality: np.ndarray) -> None:
    import highspy

    status = h.passModel(
        p.num_col,
        p.num_row,
        len(p.a_index),
        1,  # MatrixFormat.kColwise
        1,  # ObjSense.kMinimize
        p.offset,
        p.col_cost,
        p.col_lower,
        p.col_upper,
        p.row_lower,
        p.row_upper,
        p.a_start,
        p.a_index,
        p.a_value,
        integrality,
    )
    if status == highspy.HighsStatus.kError:
        raise SolverError("HiGHS rejected the ETS program (passModel returned kError)")


def _run(h: Any, what: str) -> np.ndarray:
    import highspy

    h.run()  # highspy releases the GIL while HiGHS runs
    model_status = h.getModelStatus()
    if model_status != highspy.HighsModelStatus.kOptimal:
        raise SolverError(
            f"HiGHS did not solve the ETS program ({what}) to optimality: "
            f"{h.modelStatusToString(model_status)}"
        )
    return np.asarray(h.getSolution().col_value, dtype=np.float64)


def _rounded_if_feasible(x: np.ndarray, p: EtsProgram) -> np.ndarray | None:
    """Round a relaxed solution; return it if it is integral and satisfies every bound and row."""
    r = np.round(x)
    if np.any(np.abs(x - r) > _INTEGRAL_TOL):
        return None
    if np.any(r < p.col_lower - _FEAS_TOL) or np.any(r > p.col_upper + _FEAS_TOL):
        return None
    col_of_nz = np.repeat(np.arange(p.num_col), np.diff(p.a_start))
    activity = np.bincount(p.a_index, weights=p.a_value * r[col_of_nz], minlength=p.num_row)
    if np.any(activity < p.row_lower - _FEAS_TOL) or np.any(activity > p.row_upper + _FEAS_TOL):
        return None
    return r


def solve_program(program: EtsProgram, *, time_limit_s: float | None = None) -> list[bool]:
    """Solve an ETS program exactly; return the kept flag of each candidate (the x columns).

    ``program`` comes from ``_core.EtsInstance.program()`` (minimisation, CSC matrix, all columns
    binary); its numpy arrays go to HiGHS as they are. The LP relaxation is solved first; when its
    optimum is integral it is also the optimum of the integer program and is returned, otherwise
    HiGHS's branch-and-bound solves the integer program with a zero relative gap. Deterministic
    (fixed seed, one HiGHS thread, no state carried from one solve to the next).

    Raises ``SolverError`` when HiGHS does not report an optimal solution (for example when
    ``time_limit_s`` runs out first).
    """
    h = _highs(time_limit_s)
    h.clearSolver()  # no basis or solution of the previous solve on this thread
    _pass(h, program, np.zeros(program.num_col, dtype=np.int32))  # HighsVarType.kContinuous
    x = _rounded_if_feasible(_run(h, "LP relaxation"), program)
    if x is None:
        _pass(h, program, program.integrality)
        x = np.round(_run(h, "integer program"))
    return (x[: program.num_x] > 0.5).tolist()
