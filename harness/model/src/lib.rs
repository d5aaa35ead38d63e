//! moebench-model: a libtorch (tch) transformer runtime for dense and MoE decoder families whose
//! logits equal transformers' (see tests/parity.rs), with stacked experts, pluggable routing,
//! forward hooks, a KV cache and `save_pretrained`.
pub mod attention;
pub mod config;
pub mod error;
pub mod generate;
pub mod layers;
pub mod model;
pub mod moe;
pub mod observer;
pub mod rope;
pub mod weights;

pub use config::{Family, ModelConfig};
pub use error::{ModelError, Result};
pub use model::{Ffn, ForwardOptions, KvCache, Model};
