//! lm-eval's Python task hooks on an embedded CPython: the [`HookRuntime`] that
//! `moebench-tasks` calls for `process_docs`, `!function` fields, `process_results`, metric
//! and aggregation functions, filters, `fewshot_config.samples` and `custom_dataset`.
//!
//! pyo3 (and so libpython) is only linked with the `embed` feature (on by default), so that
//! crates that need no Python never link it and a machine without libpython can build the
//! rest with `--no-default-features`. Without it, [`install`] installs nothing and every hook
//! reports that this build has no Python.
//!
//! [`HookRuntime`]: moebench_tasks::hooks::HookRuntime
mod env;
#[cfg(feature = "embed")]
mod runtime;

pub use env::{EnvError, PythonEnv};
#[cfg(feature = "embed")]
pub use runtime::PyRuntime;

/// Whether this build embeds Python (the `embed` feature); without it hooks cannot run.
pub const EMBEDS_PYTHON: bool = cfg!(feature = "embed");

/// Installs the embedded-Python hook runtime for the whole process (the interpreter starts
/// on the first hook call). Returns whether this build embeds Python.
pub fn install() -> bool {
    #[cfg(feature = "embed")]
    {
        moebench_tasks::hooks::install(std::sync::Arc::new(PyRuntime::default()));
        true
    }
    #[cfg(not(feature = "embed"))]
    {
        false
    }
}
