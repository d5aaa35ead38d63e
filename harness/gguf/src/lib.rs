//! GGUF reading, dequantisation and conversion to a Hugging Face checkpoint, in pure Rust.
//!
//! - [`gguf`]: a memory-mapped GGUF v2/v3 reader;
//! - [`dequant`]: F32/F16/BF16/Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 → f32, bit-identical to ggml;
//! - [`convert`]: a llama GGUF → `model.safetensors` + configs + tokenizer, as transformers 5.23
//!   would load it;
//! - [`hf_cache`]: installing such a directory into a huggingface_hub cache, and
//!   [`prepare_smollm2`] doing all of it for the packaged SmolLM2-135M-Instruct GGUF.

pub mod convert;
pub mod dequant;
mod error;
pub mod gguf;
pub mod hf_cache;

pub use convert::convert_llama_gguf;
pub use error::{Error, Result};
pub use gguf::GgufFile;
pub use hf_cache::{install_into_hub_cache, prepare_smollm2, PreparedModel};
