//! moebench-model: a libtorch (tch) transformer runtime for dense and MoE decoder families whose
//! logits equal transformers' (see tests/parity.rs), with stacked experts, pluggable routing,
//! forward hooks, a KV cache and `save_pretrained`.
pub mod attention;
pub mod checkpoint;
pub mod config;
pub mod cost;
pub mod device;
pub mod error;
pub mod generate;
pub mod kv_cache;
pub mod layers;
pub mod model;
pub mod moe;
pub mod observer;
pub mod packing;
pub mod rope;
pub mod sampling;
pub mod save;
pub mod tokenizer;
pub mod weights;

pub use checkpoint::{resolve_checkpoint, Checkpoint};
pub use config::{Family, ModelConfig};
pub use error::{ModelError, Result};
pub use model::{BlockInputs, Ffn, ForwardOptions, KvCache, Model};
pub use tokenizer::Tokenizer;
