#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Model(#[from] moebench_model::ModelError),
    #[error(transparent)]
    Task(#[from] moebench_tasks::TaskError),
    #[error("{0}")]
    Core(#[from] moebench_core::CoreError),
    #[error("{0}")]
    Invalid(String),
    /// The model produced NaN or infinite log-probabilities: no metric is reported.
    #[error("non-finite model output, the metrics would be meaningless: {0} (check the model's weights and the method applied)")]
    NonFinite(String),
    #[error("cannot write {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}
