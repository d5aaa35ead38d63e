//! Typed errors. Each variant names the file (and, for YAML, the line and column), the field
//! or the document involved, so that the CLI can print a single actionable line.
use crate::hooks::HookError;
use moebench_core::CoreError;
use std::path::PathBuf;

/// Responses that cannot be scored, or a hook that failed while scoring.
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    #[error("{got} responses for {want} requests")]
    ResponseCount { got: usize, want: usize },
    #[error("expected {0} responses")]
    ResponseKind(&'static str),
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error(transparent)]
    Hook(#[from] HookError),
    /// A code metric (`pass_at_k`, `pass_at_1`) without [`crate::Task::allow_code_execution`].
    #[error("this task executes generated code, which was not allowed (confirm with --confirm-run-unsafe-code)")]
    CodeExecutionNotAllowed,
    /// The sandbox failed to run a generated program (not: the program failed its tests).
    #[error(transparent)]
    Sandbox(#[from] moebench_sandbox::SandboxError),
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    /// A task or group YAML that cannot be used; `at` is `file:line:column` when the location
    /// is known, else the file.
    #[error("{at}: {message}")]
    Config { at: String, message: String },

    /// A template or field that failed for one document.
    #[error("task `{task}` ({}): {field} of doc {doc}: {message}", file.display())]
    Field {
        task: String,
        file: PathBuf,
        field: String,
        doc: usize,
        message: String,
    },

    /// A data file that cannot be read or does not have the expected shape.
    #[error("{}: {message}", path.display())]
    Data { path: PathBuf, message: String },

    /// Responses that cannot be scored (for one document, or while scoring all), or a hook
    /// that failed while scoring.
    #[error("task `{task}`{}: {source}", doc.map(|d| format!(", doc {d}")).unwrap_or_default())]
    Score {
        task: String,
        doc: Option<usize>,
        /// Boxed: it holds a whole [`HookError`], and every `Result<_, TaskError>` pays for
        /// the largest variant.
        source: Box<ScoreError>,
    },

    /// A Python hook that cannot be imported, is not available, or failed.
    #[error(transparent)]
    Hook(#[from] HookError),

    #[error(transparent)]
    Hub(#[from] moebench_hub::HubError),
}

impl TaskError {
    pub(crate) fn config(at: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Config {
            at: at.into(),
            message: message.into(),
        }
    }

    pub(crate) fn data(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Data {
            path: path.into(),
            message: message.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}
