//! Typed errors of the methods: each says which method, which parameter or layer, and how to fix it.

#[derive(Debug, thiserror::Error)]
pub enum MethodError {
    /// A parameter value a method cannot use.
    #[error("{method}: parameter `{param}` {message}")]
    Param {
        method: String,
        param: String,
        message: String,
    },
    /// The model does not have what the method needs (e.g. pruning a dense model).
    #[error("{method}: {message}")]
    Unsupported { method: String, message: String },
    /// Parameters that do not fit the method's schema: every problem at once.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Params(Vec<moebench_core::params::ParamError>),
    #[error("unknown method `{name}` ({hint}implemented: {known})")]
    UnknownMethod {
        name: String,
        hint: String,
        known: String,
    },
    /// What the runner provides (a text, another model, calibration batches) failed.
    #[error("{method}: {what}: {source}")]
    Environment {
        method: String,
        what: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Model(#[from] moebench_model::ModelError),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

impl MethodError {
    pub fn param(method: &str, param: &str, message: impl Into<String>) -> Self {
        Self::Param {
            method: method.into(),
            param: param.into(),
            message: message.into(),
        }
    }

    pub fn unsupported(method: &str, message: impl Into<String>) -> Self {
        Self::Unsupported {
            method: method.into(),
            message: message.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, MethodError>;
