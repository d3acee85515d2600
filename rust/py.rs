//! The only PyO3 file: the `ets_async._core` extension module.
//!
//! Each free function extracts its arguments into Rust values, runs the core with the GIL
//! released (`py.detach`), and converts the result back; `SearchTree` methods delegate to
//! [`crate::SearchTree`] with the GIL held (see [`PySearchTree`]). Every [`crate::CoreError`]
//! becomes `ets_async.errors.CoreError` (also `ets_async._core.CoreError`), a subclass of the
//! package's `EtsError` and of `ValueError`. Integers arrive as `i64` so
//! that negative or out-of-range values are reported by the core's checks (only ints beyond
//! 64 bits fail earlier, with pyo3's `OverflowError`).

use crate::error::CoreError as RustError;
use crate::types::{node_id, node_ids, token_ids};
use numpy::{IntoPyArray, PyArray1};
use pyo3::prelude::*;

// Defined in Python (`ets_async/errors.py`) so that it derives from the package's root `EtsError`
// as well as `ValueError`: `except EtsError` catches bad input to the core like any other error.
pyo3::import_exception!(ets_async.errors, CoreError);

impl From<RustError> for PyErr {
    fn from(err: RustError) -> PyErr {
        CoreError::new_err(err.to_string())
    }
}

#[pyfunction]
fn rebase_allocation(
    py: Python<'_>,
    scores: Vec<f64>,
    budget: i64,
    softmax_temperature: f64,
) -> PyResult<Vec<u64>> {
    Ok(py.detach(|| crate::rebase_allocation(&scores, budget, softmax_temperature))?)
}

#[pyfunction]
fn reallocate_kept(
    py: Python<'_>,
    scores: Vec<f64>,
    kept: Vec<bool>,
    budget: i64,
    softmax_temperature: f64,
) -> PyResult<Vec<u64>> {
    Ok(py.detach(|| crate::reallocate_kept(&scores, &kept, budget, softmax_temperature))?)
}

#[pyfunction]
#[pyo3(signature = (scores, budget, keep=None))]
fn beam_allocation(
    py: Python<'_>,
    scores: Vec<f64>,
    budget: i64,
    keep: Option<i64>,
) -> PyResult<Vec<u64>> {
    Ok(py.detach(|| crate::beam_allocation(&scores, budget, keep))?)
}

#[pyfunction]
fn dvts_allocation(
    py: Python<'_>,
    groups: Vec<i64>,
    scores: Vec<f64>,
    group_budgets: Vec<i64>,
) -> PyResult<Vec<u64>> {
    Ok(py.detach(|| crate::dvts_allocation(&groups, &scores, &group_budgets))?)
}

#[pyfunction]
fn kv_tokens(
    py: Python<'_>,
    parents: Vec<i64>,
    step_tokens: Vec<i64>,
    live: Vec<i64>,
) -> PyResult<u64> {
    Ok(py.detach(|| crate::kv_tokens(&parents, &step_tokens, &live))?)
}

#[pyfunction]
fn kv_blocks(
    py: Python<'_>,
    parents: Vec<i64>,
    step_tokens: Vec<i64>,
    live: Vec<i64>,
    block_size: i64,
) -> PyResult<u64> {
    Ok(py.detach(|| crate::kv_blocks(&parents, &step_tokens, &live, block_size))?)
}

#[pyfunction]
fn kv_unshared_tokens(
    py: Python<'_>,
    parents: Vec<i64>,
    step_tokens: Vec<i64>,
    live: Vec<i64>,
) -> PyResult<u64> {
    Ok(py.detach(|| crate::kv_unshared_tokens(&parents, &step_tokens, &live))?)
}

#[pyfunction]
fn cluster_labels(
    py: Python<'_>,
    embeddings: &[u8],
    dim: i64,
    threshold: f64,
) -> PyResult<Vec<usize>> {
    Ok(py.detach(|| crate::cluster_labels(embeddings, dim, threshold))?)
}

#[pyfunction]
#[pyo3(signature = (parents, candidates, scores, cluster_labels, budget, lambda_b, lambda_s, softmax_temperature, cost="nodes", step_tokens=None))]
#[allow(clippy::too_many_arguments)]
fn ets_instance(
    py: Python<'_>,
    parents: Vec<i64>,
    candidates: Vec<i64>,
    scores: Vec<f64>,
    cluster_labels: Option<Vec<i64>>,
    budget: i64,
    lambda_b: f64,
    lambda_s: f64,
    softmax_temperature: f64,
    cost: &str,
    step_tokens: Option<Vec<i64>>,
) -> PyResult<EtsInstance> {
    let params = crate::EtsParams {
        budget,
        lambda_b,
        lambda_s,
        softmax_temperature,
        cost: cost.parse()?,
    };
    let instance = py.detach(|| {
        crate::EtsInstance::from_parents(&crate::ProgramInput {
            parents: &parents,
            candidates: &candidates,
            scores: &scores,
            cluster_labels: cluster_labels.as_deref(),
            step_tokens: step_tokens.as_deref(),
            params,
        })
    })?;
    Ok(EtsInstance(instance))
}

/// One frontier's ETS problem; see `_core.pyi` for the documentation.
#[pyclass(frozen, module = "ets_async._core")]
#[repr(transparent)]
struct EtsInstance(crate::EtsInstance);

#[pymethods]
impl EtsInstance {
    #[getter]
    fn kept(&self) -> Option<Vec<bool>> {
        self.0.exact_kept().map(<[bool]>::to_vec)
    }

    #[getter]
    fn counts(&self) -> Option<Vec<u64>> {
        self.0.exact_counts().map(<[u64]>::to_vec)
    }

    #[getter]
    fn num_candidates(&self) -> usize {
        self.0.num_candidates()
    }

    #[getter]
    fn num_clusters(&self) -> usize {
        self.0.num_clusters()
    }

    #[getter]
    fn ancestors(&self) -> Vec<usize> {
        self.0.ancestors().to_vec()
    }

    #[getter]
    fn outcome(&self) -> Vec<f64> {
        self.0.outcome().to_vec()
    }

    fn objective(&self, kept: Vec<bool>) -> PyResult<f64> {
        Ok(self.0.objective(&kept)?)
    }

    fn reallocate(&self, py: Python<'_>, kept: Vec<bool>) -> PyResult<Vec<u64>> {
        Ok(py.detach(|| self.0.reallocate(&kept))?)
    }

    fn program(&self, py: Python<'_>) -> PyResult<EtsProgram> {
        let p = py.detach(|| self.0.program())?;
        Ok(EtsProgram {
            num_col: p.num_col,
            num_row: p.num_row,
            num_x: p.num_x,
            offset: p.offset,
            col_cost: p.col_cost.into_pyarray(py).unbind(),
            col_lower: p.col_lower.into_pyarray(py).unbind(),
            col_upper: p.col_upper.into_pyarray(py).unbind(),
            integrality: p.integrality.into_pyarray(py).unbind(),
            row_lower: p.row_lower.into_pyarray(py).unbind(),
            row_upper: p.row_upper.into_pyarray(py).unbind(),
            a_start: p.a_start.into_pyarray(py).unbind(),
            a_index: p.a_index.into_pyarray(py).unbind(),
            a_value: p.a_value.into_pyarray(py).unbind(),
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "EtsInstance(num_candidates={}, num_ancestors={}, num_clusters={}, exact={})",
            self.0.num_candidates(),
            self.0.ancestors().len(),
            self.0.num_clusters(),
            self.0.exact_kept().is_some()
        )
    }
}

/// The ETS program as HiGHS arrays: numpy arrays that own the buffers Rust built (no copy).
#[pyclass(frozen, module = "ets_async._core")]
struct EtsProgram {
    #[pyo3(get)]
    num_col: usize,
    #[pyo3(get)]
    num_row: usize,
    #[pyo3(get)]
    num_x: usize,
    #[pyo3(get)]
    offset: f64,
    #[pyo3(get)]
    col_cost: Py<PyArray1<f64>>,
    #[pyo3(get)]
    col_lower: Py<PyArray1<f64>>,
    #[pyo3(get)]
    col_upper: Py<PyArray1<f64>>,
    #[pyo3(get)]
    integrality: Py<PyArray1<i32>>,
    #[pyo3(get)]
    row_lower: Py<PyArray1<f64>>,
    #[pyo3(get)]
    row_upper: Py<PyArray1<f64>>,
    #[pyo3(get)]
    a_start: Py<PyArray1<i32>>,
    #[pyo3(get)]
    a_index: Py<PyArray1<i32>>,
    #[pyo3(get)]
    a_value: Py<PyArray1<f64>>,
}

#[pymethods]
impl EtsProgram {
    fn __repr__(&self) -> String {
        format!(
            "EtsProgram(num_col={}, num_row={}, num_x={})",
            self.num_col, self.num_row, self.num_x
        )
    }
}

/// One problem's search tree; see `_core.pyi` for the documentation.
///
/// Its methods keep the GIL: each costs O(its arguments) or O(the union of the live paths), and
/// releasing the GIL while holding the tree's mutable borrow would turn a concurrent call from
/// another thread into "Already borrowed" instead of a short wait. The exception is
/// `ets_instance`, the one call that runs off the event loop (a problem's selection, while its
/// search coroutine waits): it only reads the tree, so it releases the GIL and lets other
/// problems' selections run on other cores.
#[pyclass(name = "SearchTree", module = "ets_async._core")]
#[repr(transparent)]
struct PySearchTree(crate::SearchTree);

#[pymethods]
impl PySearchTree {
    #[new]
    fn new(prompt_token_ids: Vec<i64>, width: i64, max_tokens: i64) -> PyResult<Self> {
        let prompt = token_ids(&prompt_token_ids, "prompt_token_ids")?;
        Ok(PySearchTree(crate::SearchTree::new(
            prompt, width, max_tokens,
        )?))
    }

    fn add_children(
        &mut self,
        parent: i64,
        steps: Vec<Vec<i64>>,
        scores: Vec<f64>,
        finished: Vec<bool>,
    ) -> PyResult<Vec<usize>> {
        let parent = node_id(parent, "parent")?;
        let steps = steps
            .iter()
            .map(|s| token_ids(s, "steps"))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.0.add_children(parent, &steps, &scores, &finished)?)
    }

    #[getter]
    fn num_nodes(&self) -> usize {
        self.0.num_nodes()
    }

    #[getter]
    fn remaining_budget(&self) -> u64 {
        self.0.remaining_budget()
    }

    #[getter]
    fn max_tokens(&self) -> u64 {
        self.0.max_tokens()
    }

    fn parent(&self, v: i64) -> PyResult<i64> {
        Ok(self.0.parent(node_id(v, "v")?)?.map_or(-1, |p| p as i64))
    }

    fn depth(&self, v: i64) -> PyResult<u32> {
        Ok(self.0.depth(node_id(v, "v")?)?)
    }

    fn score(&self, v: i64) -> PyResult<f64> {
        Ok(self.0.score(node_id(v, "v")?)?)
    }

    fn is_finished(&self, v: i64) -> PyResult<bool> {
        Ok(self.0.is_finished(node_id(v, "v")?)?)
    }

    fn cum_tokens(&self, v: i64) -> PyResult<u64> {
        Ok(self.0.cum_tokens(node_id(v, "v")?)?)
    }

    fn step_len(&self, v: i64) -> PyResult<usize> {
        Ok(self.0.step_len(node_id(v, "v")?)?)
    }

    fn prompt_token_ids(&self, v: i64) -> PyResult<Vec<u32>> {
        Ok(self.0.prompt_token_ids(node_id(v, "v")?)?)
    }

    fn path(&self, v: i64) -> PyResult<Vec<usize>> {
        Ok(self.0.path(node_id(v, "v")?)?)
    }

    fn path_scores(&self, v: i64) -> PyResult<Vec<f64>> {
        Ok(self.0.path_scores(node_id(v, "v")?)?)
    }

    fn parents(&self) -> Vec<i64> {
        self.0.parents()
    }

    fn step_lengths(&self, include_prompt: bool) -> Vec<u64> {
        self.0.step_lengths(include_prompt)
    }

    #[pyo3(signature = (candidates, cluster_labels, budget, lambda_b, lambda_s, softmax_temperature, cost="nodes"))]
    #[allow(clippy::too_many_arguments)]
    fn ets_instance(
        &self,
        py: Python<'_>,
        candidates: Vec<i64>,
        cluster_labels: Option<Vec<i64>>,
        budget: i64,
        lambda_b: f64,
        lambda_s: f64,
        softmax_temperature: f64,
        cost: &str,
    ) -> PyResult<EtsInstance> {
        let candidates = node_ids(&candidates, "candidates")?;
        let params = crate::EtsParams {
            budget,
            lambda_b,
            lambda_s,
            softmax_temperature,
            cost: cost.parse()?,
        };
        let tree = &self.0;
        let instance =
            py.detach(|| tree.ets_instance(&candidates, cluster_labels.as_deref(), params))?;
        Ok(EtsInstance(instance))
    }

    fn retire(&mut self, nodes: Vec<i64>) -> PyResult<(Vec<usize>, Vec<usize>)> {
        Ok(self.0.retire(&node_ids(&nodes, "nodes")?)?)
    }

    fn would_retire(&self, parent: i64, step_tokens: usize, finished: bool) -> PyResult<bool> {
        Ok(self.0.would_retire(node_id(parent, "parent")?, step_tokens, finished)?)
    }

    fn finished_nodes(&self) -> Vec<usize> {
        self.0.finished_nodes()
    }

    fn kv(&mut self, live: Vec<i64>, block_size: i64) -> PyResult<(u64, u64, u64)> {
        let s = self.0.kv(&node_ids(&live, "live")?, block_size)?;
        Ok((s.tokens, s.blocks, s.unshared_tokens))
    }

    fn __len__(&self) -> usize {
        self.0.num_nodes()
    }

    fn __repr__(&self) -> String {
        format!(
            "SearchTree(num_nodes={}, remaining_budget={}, max_tokens={})",
            self.0.num_nodes(),
            self.0.remaining_budget(),
            self.0.max_tokens()
        )
    }
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("CoreError", m.py().get_type::<CoreError>())?;
    m.add_function(wrap_pyfunction!(rebase_allocation, m)?)?;
    m.add_function(wrap_pyfunction!(reallocate_kept, m)?)?;
    m.add_function(wrap_pyfunction!(beam_allocation, m)?)?;
    m.add_function(wrap_pyfunction!(dvts_allocation, m)?)?;
    m.add_function(wrap_pyfunction!(kv_tokens, m)?)?;
    m.add_function(wrap_pyfunction!(kv_blocks, m)?)?;
    m.add_function(wrap_pyfunction!(kv_unshared_tokens, m)?)?;
    m.add_function(wrap_pyfunction!(cluster_labels, m)?)?;
    m.add_function(wrap_pyfunction!(ets_instance, m)?)?;
    m.add_class::<EtsInstance>()?;
    m.add_class::<EtsProgram>()?;
    m.add_class::<PySearchTree>()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use pyo3::exceptions::PyValueError;

    #[test]
    fn core_errors_become_the_packages_core_error_with_the_core_message() {
        Python::initialize();
        Python::attach(|py| {
            // `ets_async.errors` alone, without the package's __init__ (whose imports need the
            // project's virtual environment): a bare package object pointing at python/ets_async.
            let package = PyModule::new(py, "ets_async").unwrap();
            let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/python/ets_async");
            package.setattr("__path__", vec![dir]).unwrap();
            let modules = py.import("sys").unwrap().getattr("modules").unwrap();
            modules.set_item("ets_async", package).unwrap();
            let err: PyErr = RustError::NothingKept.into();
            assert!(err.is_instance_of::<PyValueError>(py));
            assert!(err.is_instance_of::<CoreError>(py));
            let errors = py.import("ets_async.errors").unwrap();
            let root = errors.getattr("EtsError").unwrap();
            assert!(err.value(py).is_instance(&root).unwrap());
            assert!(err.value(py).to_string().contains("kept has no true entry"));
        });
    }
}
