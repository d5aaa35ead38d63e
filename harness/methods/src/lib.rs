//! moebench-methods: the MoE methods and baselines, one module each. A method talks to the model
//! only through the MoE layer (stacked experts, router, [`moebench_model::moe::Selector`]), the
//! forward observers and `save_pretrained` (docs/architecture.md, "The MoE layer").
//!
//! - [`topk_min_p`]: top-k with a relative probability floor (a selector and its catalogue entry).
//! - [`routing`]: selectors beyond the checkpoint's top-k — fixed Top-p (Huang et al.), DTop-p
//!   with its PI controller, Expert Choice, USMoE — and their group modes.
//! - [`upcycle`]: sparse upcycling of a dense model (Komatsuzaki et al.).
//! - [`scratch`]: randomly initialised models and a byte-level tokenizer, for training here.
//! - [`train`]: AdamW training loop with the MoE auxiliary losses.
//! - [`calibration`], [`prune`]: calibration statistics and expert pruning (Freq, EAN, REAP).
//! - [`diagnostics`]: routing diagnostics per layer.
//! - [`method`]: what a method is to its callers (schema, typed parameters, checks, apply);
//!   [`catalogue`]: every method, registered once, as suites and commands name them.
//! - [`dume`]: DUME (MoErge + ridge routers) and its baselines; [`merge`]: REAM, M-SMoE,
//!   HC-SMoE; [`dense2moe`]: layer similarity, layer-fusion upcycling, layer pruning.
pub mod calibration;
pub mod catalogue;
pub mod dense2moe;
pub mod diagnostics;
pub mod dume;
pub mod error;
pub mod merge;
pub mod method;
pub mod prune;
pub mod random_prune;
pub mod routing;
pub mod scratch;
pub mod topk_min_p;
pub mod train;
pub mod upcycle;

pub use error::{MethodError, Result};
