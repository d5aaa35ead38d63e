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
