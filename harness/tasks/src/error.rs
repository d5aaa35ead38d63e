//! Typed errors. Each variant names the file (and, for YAML, the line and column), the field
//! or the document involved, so that the CLI can print a single actionable line.
use std::path::PathBuf;

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

    /// Model responses that do not match the requests of a document.
    #[error("task `{task}`, doc {doc}: {message}")]
    Responses {
        task: String,
        doc: usize,
        message: String,
    },

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
