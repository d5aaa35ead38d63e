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
    #[error("cannot write {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}
