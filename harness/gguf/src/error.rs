//! The crate's one error type.
//!
//! Every variant names the file it is about, so that a message read in a log on its own says which
//! input (or output) is wrong and how.

use std::path::{Path, PathBuf};

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, and in which file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system call on `path` failed.
    #[error("{}: {action} failed: {source}", .path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// The file does not start with the four bytes `GGUF`.
    #[error("{}: not a GGUF file: bad magic {found:02x?}, expected \"GGUF\"", .path.display())]
    BadMagic { path: PathBuf, found: Vec<u8> },

    /// Only GGUF versions 2 and 3 (64-bit counts) are read; version 1 used 32-bit counts.
    #[error("{}: unsupported GGUF version {version} (supported: 2 and 3)", .path.display())]
    UnsupportedVersion { path: PathBuf, version: u32 },

    /// The file ends before a structure that the header says is there.
    #[error(
        "{}: truncated GGUF file: {what} needs {needed} bytes at offset {offset}, but the file is {len} bytes",
        .path.display()
    )]
    Truncated {
        path: PathBuf,
        what: String,
        offset: u64,
        needed: u64,
        len: u64,
    },

    /// A structure is present but its content breaks the GGUF spec.
    #[error("{}: invalid GGUF {what}: {problem}", .path.display())]
    Invalid {
        path: PathBuf,
        what: String,
        problem: String,
    },

    /// A tensor's data range does not fit inside the file.
    #[error(
        "{}: tensor {tensor:?}: data bytes [{start}, {end}) lie outside the file ({len} bytes)",
        .path.display()
    )]
    TensorOutOfBounds {
        path: PathBuf,
        tensor: String,
        start: u64,
        end: u64,
        len: u64,
    },

    /// The tensor's ggml type has no dequantiser here (or the id is not a ggml type at all).
    #[error(
        "{}: tensor {tensor:?}: ggml type {id} ({name}) is not supported",
        .path.display()
    )]
    UnsupportedType {
        path: PathBuf,
        tensor: String,
        id: u32,
        name: &'static str,
    },

    /// A metadata key that the conversion needs is missing or has the wrong type.
    #[error("{}: metadata key {key:?}: {problem}", .path.display())]
    Metadata {
        path: PathBuf,
        key: String,
        problem: String,
    },

    /// A tensor is missing, unexpected, or has a shape the conversion cannot handle.
    #[error("{}: tensor {tensor:?}: {problem}", .path.display())]
    Tensor {
        path: PathBuf,
        tensor: String,
        problem: String,
    },

    /// The model is valid GGUF but describes something this crate does not convert.
    #[error("{}: cannot convert: {problem}", .path.display())]
    Unsupported { path: PathBuf, problem: String },

    /// Writing `model.safetensors` failed.
    #[error("{}: writing safetensors failed: {source}", .path.display())]
    Safetensors {
        path: PathBuf,
        #[source]
        source: safetensors::SafeTensorError,
    },

    /// Serialising a JSON file failed.
    #[error("{}: writing JSON failed: {source}", .path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// A caller passed an argument that cannot be used (for example a malformed revision).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// Adds the path and the action to an `io::Error`.
pub(crate) trait IoContext<T> {
    fn io_context(self, path: &Path, action: &'static str) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn io_context(self, path: &Path, action: &'static str) -> Result<T> {
        self.map_err(|source| Error::Io {
            path: path.to_path_buf(),
            action,
            source,
        })
    }
}
