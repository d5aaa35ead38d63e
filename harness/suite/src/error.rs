use std::path::PathBuf;

/// Every error of the suite crate: where it is (a file, `file:line:column` when known) and what
/// is wrong, with a hint when there is an obvious fix.
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    #[error("{at}: {message}")]
    Invalid { at: String, message: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Store { path: PathBuf, message: String },
    /// Several problems, each with its own location (a suite is checked as a whole).
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Many(Vec<SuiteError>),
}

impl SuiteError {
    /// Every single problem (one, or those of [`SuiteError::Many`]).
    pub fn problems(self) -> Vec<SuiteError> {
        match self {
            SuiteError::Many(many) => many,
            one => vec![one],
        }
    }

    pub fn invalid(at: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            at: at.into(),
            message: message.into(),
        }
    }

    pub(crate) fn read(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| Self::Read {
            path: path.to_owned(),
            source,
        }
    }

    pub(crate) fn write(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| Self::Write {
            path: path.to_owned(),
            source,
        }
    }
}
