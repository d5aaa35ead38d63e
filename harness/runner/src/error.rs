//! The runner's typed error: the library errors it meets, plus context (what it was doing) and
//! the list of problems a pre-run check found.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error(transparent)]
    Suite(#[from] moebench_suite::SuiteError),
    #[error("build: {0}")]
    Build(#[from] moebench_suite::BuildError),
    #[error(transparent)]
    Method(Box<moebench_methods::MethodError>),
    #[error(transparent)]
    Model(Box<moebench_model::ModelError>),
    #[error(transparent)]
    Eval(Box<moebench_eval::EvalError>),
    #[error(transparent)]
    Task(Box<moebench_tasks::TaskError>),
    #[error(transparent)]
    Hub(Box<moebench_hub::HubError>),
    #[error(transparent)]
    Sandbox(#[from] moebench_sandbox::SandboxError),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("I/O: {0}")]
    UnlocatedIo(#[from] std::io::Error),
    /// A problem described in words: what, where, how to fix.
    #[error("{0}")]
    Invalid(String),
    /// What the runner was doing when `source` happened.
    /// The cause is part of the message, not an error `source`: chain printers (anyhow's
    /// `{:#}`) would repeat it otherwise.
    #[error("{context}: {cause}")]
    Context {
        context: String,
        cause: Box<RunnerError>,
    },
    /// Everything a pre-run check found wrong, each with its `file:line:column`.
    #[error("{}", checks_message(.0))]
    Checks(Vec<String>),
}

/// One problem on one line; several as a count and one indented line each.
fn checks_message(problems: &[String]) -> String {
    match problems {
        [one] => one.clone(),
        many => format!(
            "{} problems found before running (nothing was run):\n  {}",
            many.len(),
            many.join("\n  ")
        ),
    }
}

// The library errors are boxed: they are large (about 120 bytes each) and rare, and a small
// `Result` keeps every call on the hot path cheap.
macro_rules! boxed_from {
    ($($variant:ident($ty:ty)),* $(,)?) => {
        $(impl From<$ty> for RunnerError {
            fn from(e: $ty) -> Self {
                RunnerError::$variant(Box::new(e))
            }
        })*
    };
}

boxed_from!(
    Method(moebench_methods::MethodError),
    Model(moebench_model::ModelError),
    Eval(moebench_eval::EvalError),
    Task(moebench_tasks::TaskError),
    Hub(moebench_hub::HubError),
);

pub type Result<T, E = RunnerError> = std::result::Result<T, E>;

impl RunnerError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }

    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> RunnerError {
        let path = path.into();
        move |source| RunnerError::Io { path, source }
    }
}

impl From<serde_json::Error> for RunnerError {
    fn from(e: serde_json::Error) -> Self {
        RunnerError::Invalid(format!("JSON: {e}"))
    }
}

/// `anyhow`-style context on any error the runner meets.
pub trait Context<T> {
    fn context(self, context: impl Into<String>) -> Result<T>;
    fn with_context<S: Into<String>>(self, context: impl FnOnce() -> S) -> Result<T>;
}

impl<T, E: Into<RunnerError>> Context<T> for std::result::Result<T, E> {
    fn context(self, context: impl Into<String>) -> Result<T> {
        self.map_err(|e| RunnerError::Context {
            context: context.into(),
            cause: Box::new(e.into()),
        })
    }

    fn with_context<S: Into<String>>(self, context: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| RunnerError::Context {
            context: context().into(),
            cause: Box::new(e.into()),
        })
    }
}

/// Returns early with [`RunnerError::Invalid`].
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::error::RunnerError::Invalid(format!($($arg)*)))
    };
}
pub(crate) use bail;

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: the context's cause was also the error's `source`, so `moebench` printed it
    /// twice ("applying dense2moe: X: X").
    #[test]
    fn a_context_states_its_cause_once() {
        let e = Err::<(), _>(RunnerError::Invalid("bad input".into()))
            .context("applying m")
            .unwrap_err();
        assert_eq!(e.to_string(), "applying m: bad input");
        assert!(std::error::Error::source(&e).is_none());
    }
}
