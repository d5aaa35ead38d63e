//! Typed errors of the model runtime. Every variant names the file or tensor involved so that the
//! CLI can print one line that says what is wrong, where, and how to fix it.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config {path}: {msg}")]
    Config { path: PathBuf, msg: String },
    #[error(
        "unsupported model family `{model_type}` in {path}; supported: {supported} \
         (fix: use a checkpoint of a supported family)"
    )]
    UnsupportedFamily {
        model_type: String,
        path: PathBuf,
        supported: String,
    },
    #[error("corrupt or truncated safetensors file {path}: {msg} (fix: re-download or re-run `moebench prepare`)")]
    Safetensors { path: PathBuf, msg: String },
    #[error("tensor `{name}` is missing from the checkpoint in {dir}")]
    MissingTensor { name: String, dir: PathBuf },
    #[error(
        "shape mismatch for tensor `{name}` in {dir}: config implies {expected:?}, weights have {found:?} \
         (fix: the config.json does not belong to these weights)"
    )]
    ShapeMismatch {
        name: String,
        expected: Vec<i64>,
        found: Vec<i64>,
        dir: PathBuf,
    },
    #[error("unused tensors in {dir} (first: `{first}`, {count} in all): the config does not describe these weights")]
    UnusedTensors {
        first: String,
        count: usize,
        dir: PathBuf,
    },
    #[error("tokenizer {path}: {msg}")]
    Tokenizer { path: PathBuf, msg: String },
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error(transparent)]
    Hub(#[from] moebench_hub::HubError),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

pub type Result<T> = std::result::Result<T, ModelError>;
