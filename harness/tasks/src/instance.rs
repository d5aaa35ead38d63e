//! What a document turns into: the model calls it needs ([`Request`]), what its answers are
//! compared with ([`Expected`]), and lm-eval's sample hashes ([`DocInstance`]).
use crate::config::Sampling;
use crate::hashing::{HasSampleHashes, SampleHashes};
use moebench_core::metrics::Gold;
use serde_json::Value;

/// One call to the model.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// `loglikelihood(context, continuation)`. Multiple choice: one per choice,
    /// `continuation = target_delimiter + choice` (multiple input: one per context with the
    /// shared target), then for `acc_mutual_info` one `("", target_delimiter + choice)` per
    /// choice. Loglikelihood tasks: the target itself as continuation.
    Loglikelihood {
        context: String,
        continuation: String,
    },
    /// `loglikelihood_rolling(text)` of the whole target, without context.
    Rolling { text: String },
    /// `generate_until(context, until, max_gen_toks)`: greedy, or sampled with `sampling`.
    /// A task with `repeats: n` asks for n of these per document.
    Generate {
        context: String,
        until: Vec<String>,
        max_gen_toks: usize,
        sampling: Option<Sampling>,
    },
}

impl Request {
    /// `arguments[0]`, the string lm-eval hashes as `prompt_hash`.
    pub fn first_argument(&self) -> &str {
        match self {
            Self::Loglikelihood { context, .. } | Self::Generate { context, .. } => context,
            Self::Rolling { text } => text,
        }
    }
}

/// What a document's responses are compared with.
#[derive(Debug, Clone, PartialEq)]
pub enum Expected {
    /// `multiple_choice`: the gold index or indices into [`DocInstance::choices`].
    Choice(Gold),
    /// `generate_until`: the reference strings.
    References(Vec<String>),
    /// `loglikelihood_rolling`: the text whose words and UTF-8 bytes the perplexities count
    /// (the target, or what the processor says, e.g. WikiText's original page).
    CountedText(String),
    /// `loglikelihood`: only the greediness of the continuation is scored.
    Greedy,
}

/// One evaluated document with its requests.
#[derive(Debug, Clone, PartialEq)]
pub struct DocInstance {
    pub doc_id: usize,
    pub doc: Value,
    pub requests: Vec<Request>,
    /// `doc_to_target(doc)`, as lm-eval logs it as the sample's `target`.
    pub target: Value,
    pub expected: Expected,
    /// `doc_to_choice(doc)` for multiple-choice tasks (contexts for multiple input), else empty.
    pub choices: Vec<String>,
    pub hashes: SampleHashes,
}

impl HasSampleHashes for DocInstance {
    fn sample_hashes(&self) -> &SampleHashes {
        &self.hashes
    }
}
