//! Per-document metrics and their aggregations, as lm-eval computes them.
//!
//! Per-document values follow `ConfigurableTask.process_results` (`lm_eval/api/task.py`);
//! aggregations, `higher_is_better` and the generation `exact_match` follow the registry in
//! `lm_eval/api/metrics.py`. Metrics marked *moebench extension* do not exist in lm-eval.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::pyre::PyRegex;
use crate::{classification, numpy, pystr, sacrebleu, stats, CoreError};

pub use crate::stats::mean;

/// A metric name as written in a task's `metric_list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricName {
    /// Multiple choice: the highest log-likelihood is the gold choice. Loglikelihood tasks:
    /// the continuation is the greedy one.
    Acc,
    /// Multiple choice, log-likelihood divided by the choice's length in characters.
    AccNorm,
    /// Multiple choice, log-likelihood divided by the choice's length in UTF-8 bytes.
    AccBytes,
    /// Multiple choice, conditional minus unconditional log-likelihood.
    AccMutualInfo,
    /// Multiple choice, log-likelihood divided by the number of continuation tokens
    /// (moebench extension).
    AccTokenNorm,
    /// Multiple choice: the gold continuation is the greedy one. Generation: the (normalised)
    /// output equals a reference.
    ExactMatch,
    /// Loglikelihood tasks: `exp(-mean log-likelihood)` over documents.
    Perplexity,
    /// Rolling log-likelihood per word.
    WordPerplexity,
    /// Rolling log-likelihood per UTF-8 byte.
    BytePerplexity,
    /// Rolling log-likelihood in bits per UTF-8 byte.
    BitsPerByte,
    /// Rolling log-likelihood per token (moebench extension; depends on the tokenizer).
    TokenPerplexity,
    /// Multiple choice: `(gold, prediction)` pairs for the binary F1 aggregation.
    F1,
    /// Multiple choice: `(gold, prediction)` pairs for Matthews' correlation coefficient.
    Mcc,
    /// Multiple choice: `(gold, softmax of the log-likelihoods)` for the Brier score.
    BrierScore,
    /// Generation: `(reference, prediction)` pairs for corpus BLEU.
    Bleu,
    /// Generation: `(reference, prediction)` pairs for corpus chrF.
    Chrf,
    /// Generation: `(reference, prediction)` pairs for corpus chrF++.
    #[serde(rename = "chrf++")]
    ChrfPlusPlus,
    /// Generation: `(reference, prediction)` pairs for corpus TER.
    Ter,
    /// Generation: no per-document value (`None`); its aggregation reports 999.
    Bypass,
}

impl MetricName {
    /// Every supported metric.
    pub const ALL: [Self; 19] = [
        Self::Acc,
        Self::AccNorm,
        Self::AccBytes,
        Self::AccMutualInfo,
        Self::AccTokenNorm,
        Self::ExactMatch,
        Self::Perplexity,
        Self::WordPerplexity,
        Self::BytePerplexity,
        Self::BitsPerByte,
        Self::TokenPerplexity,
        Self::F1,
        Self::Mcc,
        Self::BrierScore,
        Self::Bleu,
        Self::Chrf,
        Self::ChrfPlusPlus,
        Self::Ter,
        Self::Bypass,
    ];

    /// The name used in task YAML and result keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Acc => "acc",
            Self::AccNorm => "acc_norm",
            Self::AccBytes => "acc_bytes",
            Self::AccMutualInfo => "acc_mutual_info",
            Self::AccTokenNorm => "acc_token_norm",
            Self::ExactMatch => "exact_match",
            Self::Perplexity => "perplexity",
            Self::WordPerplexity => "word_perplexity",
            Self::BytePerplexity => "byte_perplexity",
            Self::BitsPerByte => "bits_per_byte",
            Self::TokenPerplexity => "token_perplexity",
            Self::F1 => "f1",
            Self::Mcc => "mcc",
            Self::BrierScore => "brier_score",
            Self::Bleu => "bleu",
            Self::Chrf => "chrf",
            Self::ChrfPlusPlus => "chrf++",
            Self::Ter => "ter",
            Self::Bypass => "bypass",
        }
    }

    /// The aggregation lm-eval's registry assigns (`register_metric(aggregation=...)`).
    pub fn default_aggregation(self) -> Aggregation {
        match self {
            Self::Perplexity => Aggregation::Perplexity,
            Self::WordPerplexity | Self::BytePerplexity | Self::TokenPerplexity => {
                Aggregation::WeightedPerplexity
            }
            Self::BitsPerByte => Aggregation::BitsPerByte,
            Self::F1 => Aggregation::F1,
            Self::Mcc => Aggregation::MatthewsCorrcoef,
            Self::BrierScore => Aggregation::BrierScore,
            Self::Bleu => Aggregation::Bleu,
            Self::Chrf => Aggregation::Chrf,
            Self::ChrfPlusPlus => Aggregation::ChrfPlusPlus,
            Self::Ter => Aggregation::Ter,
            Self::Bypass => Aggregation::Bypass,
            _ => Aggregation::Mean,
        }
    }

    /// `higher_is_better` from lm-eval's registry: false for the perplexity family, the
    /// Brier score and TER.
    pub fn higher_is_better(self) -> bool {
        !matches!(
            self,
            Self::Perplexity
                | Self::WordPerplexity
                | Self::BytePerplexity
                | Self::BitsPerByte
                | Self::TokenPerplexity
                | Self::BrierScore
                | Self::Ter
        )
    }

    /// True for metrics lm-eval does not have.
    pub fn is_moebench_extension(self) -> bool {
        matches!(self, Self::AccTokenNorm | Self::TokenPerplexity)
    }
}

impl FromStr for MetricName {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| CoreError::UnknownMetric(s.to_owned()))
    }
}

impl fmt::Display for MetricName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One document's numeric contribution to a metric (a value of lm-eval's `process_results`
/// dict). Corpus-level metrics take items instead ([`Aggregation::aggregate_items`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DocScore {
    /// A plain number: accuracy, exact match, or a log-likelihood for `perplexity`.
    Value(f64),
    /// `(loglikelihood, weight)` for the weighted perplexity family (weight = words, bytes
    /// or tokens).
    Weighted(f64, f64),
}

/// How per-document scores become a task score (`register_aggregation` in lm-eval).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// `sum / len`.
    Mean,
    /// `sorted(xs)[len // 2]`: the upper median, not the midpoint average.
    Median,
    /// `exp(-mean)`.
    Perplexity,
    /// `exp(-Σll / Σweight)`.
    WeightedPerplexity,
    /// `-(Σll / Σweight) / ln 2`.
    BitsPerByte,
    /// `np.nanmean`, NaN when every value is NaN.
    NanMean,
    /// Binary F1 over `(gold, prediction)` items ([`crate::classification::f1`]).
    F1,
    /// Matthews' correlation coefficient over `(gold, prediction)` items.
    MatthewsCorrcoef,
    /// Mean Brier score over `(gold, probabilities)` items.
    BrierScore,
    /// Corpus BLEU over `(reference, prediction)` items ([`crate::sacrebleu`]).
    Bleu,
    /// Corpus chrF.
    Chrf,
    /// Corpus chrF++ (word 2-grams added).
    #[serde(rename = "chrf++")]
    ChrfPlusPlus,
    /// Corpus TER.
    Ter,
    /// lm-eval's placeholder aggregation: 999.
    Bypass,
}

impl Aggregation {
    const ALL: [Self; 14] = [
        Self::Mean,
        Self::Median,
        Self::Perplexity,
        Self::WeightedPerplexity,
        Self::BitsPerByte,
        Self::NanMean,
        Self::F1,
        Self::MatthewsCorrcoef,
        Self::BrierScore,
        Self::Bleu,
        Self::Chrf,
        Self::ChrfPlusPlus,
        Self::Ter,
        Self::Bypass,
    ];

    /// The name used in task YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mean => "mean",
            Self::Median => "median",
            Self::Perplexity => "perplexity",
            Self::WeightedPerplexity => "weighted_perplexity",
            Self::BitsPerByte => "bits_per_byte",
            Self::NanMean => "nanmean",
            Self::F1 => "f1",
            Self::MatthewsCorrcoef => "matthews_corrcoef",
            Self::BrierScore => "brier_score",
            Self::Bleu => "bleu",
            Self::Chrf => "chrf",
            Self::ChrfPlusPlus => "chrf++",
            Self::Ter => "ter",
            Self::Bypass => "bypass",
        }
    }

    /// Whether this aggregation takes [`DocScore::Weighted`] scores.
    pub fn is_weighted(self) -> bool {
        matches!(self, Self::WeightedPerplexity | Self::BitsPerByte)
    }

    /// Whether this aggregation takes [`DocScore::Item`]s (corpus-level metrics).
    pub fn takes_items(self) -> bool {
        matches!(
            self,
            Self::F1
                | Self::MatthewsCorrcoef
                | Self::BrierScore
                | Self::Bleu
                | Self::Chrf
                | Self::ChrfPlusPlus
                | Self::Ter
                | Self::Bypass
        )
    }

    /// The task score.
    pub fn aggregate(self, scores: &[DocScore]) -> Result<f64, CoreError> {
        if scores.is_empty() {
            return Err(CoreError::NoScores);
        }
        Ok(match self.typed(scores)? {
            Typed::Plain(xs) => self.plain_statistic()(&xs),
            Typed::Weighted(pairs) => self.weighted_statistic()(&pairs),
        })
    }

    /// The task score of a corpus-level aggregation ([`Aggregation::takes_items`]) over the
    /// documents' items: `(gold, prediction)` pairs for `f1`, `(reference, prediction)` for
    /// `bleu`, ….
    pub fn aggregate_items(self, items: &[Value]) -> Result<f64, CoreError> {
        if items.is_empty() {
            return Err(CoreError::NoScores);
        }
        if !self.takes_items() {
            return Err(CoreError::ScoreKind {
                aggregation: self.as_str(),
                got: "item",
            });
        }
        let items: Vec<&Value> = items.iter().collect();
        self.corpus_statistic(&items)
    }

    /// The standard error lm-eval reports for a corpus-level aggregation: a bootstrap for
    /// `f1`, `matthews_corrcoef`, `bleu`, `chrf`, `chrf++` and `ter` (`stderr_for_metric`'s
    /// bootstrappable list), `None` for `brier_score` and `bypass`.
    pub fn stderr_items(
        self,
        items: &[Value],
        bootstrap_iters: usize,
    ) -> Result<Option<f64>, CoreError> {
        if bootstrap_iters == 0 || matches!(self, Self::BrierScore | Self::Bypass) {
            return Ok(None);
        }
        self.aggregate_items(items)?;
        // Resample indices: `random.choices(xs)` draws positions, so this is the same
        // resample as lm-eval's over the items themselves.
        let indices: Vec<usize> = (0..items.len()).collect();
        let statistic = |drawn: &[usize]| {
            let resample: Vec<&Value> = drawn.iter().map(|&i| &items[i]).collect();
            self.corpus_statistic(&resample).unwrap_or(f64::NAN)
        };
        Ok(stats::bootstrap_stderr(
            statistic,
            &indices,
            bootstrap_iters,
            0,
        ))
    }

    /// A corpus-level statistic of items (`lm_eval/api/metrics.py`).
    fn corpus_statistic(self, items: &[&Value]) -> Result<f64, CoreError> {
        let bad = |message: String| CoreError::Metric {
            metric: self.as_str().to_owned(),
            message,
        };
        let pairs = || -> Result<Vec<(i64, i64)>, CoreError> {
            items
                .iter()
                .map(|item| match item.as_array().map(Vec::as_slice) {
                    Some([gold, pred]) => match (gold.as_i64(), pred.as_i64()) {
                        (Some(gold), Some(pred)) => Ok((gold, pred)),
                        _ => Err(bad(format!("expected integer labels, got {item}"))),
                    },
                    _ => Err(bad(format!(
                        "expected a (gold, prediction) pair, got {item}"
                    ))),
                })
                .collect()
        };
        match self {
            Self::F1 => {
                let (golds, preds): (Vec<i64>, Vec<i64>) = pairs()?.into_iter().unzip();
                classification::f1(&golds, &preds)
            }
            Self::MatthewsCorrcoef => {
                let (golds, preds): (Vec<i64>, Vec<i64>) = pairs()?.into_iter().unzip();
                Ok(classification::matthews_corrcoef(&golds, &preds))
            }
            Self::BrierScore => {
                let mut golds = Vec::with_capacity(items.len());
                let mut probabilities = Vec::with_capacity(items.len());
                for item in items {
                    let (gold, probs) = match item.as_array().map(Vec::as_slice) {
                        Some([gold, Value::Array(probs)]) => (gold, probs),
                        _ => {
                            return Err(bad(format!("expected (gold, probabilities), got {item}")))
                        }
                    };
                    golds.push(gold.as_i64().ok_or_else(|| bad(format!("gold {gold}")))?);
                    probabilities.push(
                        probs
                            .iter()
                            .map(Value::as_f64)
                            .collect::<Option<Vec<_>>>()
                            .ok_or_else(|| bad(format!("probabilities {item}")))?,
                    );
                }
                classification::brier_score(&golds, &probabilities)
            }
            Self::Bleu | Self::Chrf | Self::ChrfPlusPlus => {
                let owned: Vec<Value> = items.iter().map(|item| (*item).clone()).collect();
                let (references, predictions) = sacrebleu::sacreformat(&owned)?;
                Ok(match self {
                    Self::Bleu => sacrebleu::corpus_bleu(&predictions, &references),
                    Self::Chrf => sacrebleu::corpus_chrf(&predictions, &references, 0),
                    _ => sacrebleu::corpus_chrf(&predictions, &references, 2),
                })
            }
            Self::Ter => {
                let owned: Vec<Value> = items.iter().map(|item| (*item).clone()).collect();
                let (references, predictions) = sacrebleu::sacreformat(&owned)?;
                Ok(sacrebleu::corpus_ter(&predictions, &references))
            }
            Self::Bypass => Ok(999.0),
            _ => Err(bad("not a corpus-level aggregation".to_owned())),
        }
    }

    /// The standard error lm-eval reports for this aggregation (`stderr_for_metric` and
    /// `_compute_task_aggregations`): the closed form for `mean`, a bootstrap with
    /// `bootstrap_iters` resamples for `median` and `perplexity`; `None` (lm-eval's `N/A`) for
    /// fewer than two scores or `bootstrap_iters == 0`.
    ///
    /// For `weighted_perplexity` and `bits_per_byte` lm-eval reports `N/A`; moebench reports
    /// the same bootstrap over `(loglikelihood, weight)` pairs (a moebench extension, see
    /// [`Aggregation::lm_eval_reports_stderr`]).
    pub fn stderr(
        self,
        scores: &[DocScore],
        bootstrap_iters: usize,
    ) -> Result<Option<f64>, CoreError> {
        if bootstrap_iters == 0 {
            return Ok(None);
        }
        Ok(match (self, self.typed(scores)?) {
            (Self::Mean, Typed::Plain(xs)) => stats::mean_stderr(&xs),
            (_, Typed::Plain(xs)) => {
                stats::bootstrap_stderr(self.plain_statistic(), &xs, bootstrap_iters, 0)
            }
            (_, Typed::Weighted(pairs)) => {
                stats::bootstrap_stderr(self.weighted_statistic(), &pairs, bootstrap_iters, 0)
            }
        })
    }

    /// Whether lm-eval reports a standard error for this aggregation (it does not for the
    /// weighted perplexity family, the Brier score and `bypass`).
    pub fn lm_eval_reports_stderr(self) -> bool {
        !self.is_weighted() && !matches!(self, Self::BrierScore | Self::Bypass)
    }

    fn plain_statistic(self) -> fn(&[f64]) -> f64 {
        match self {
            Self::Median => median,
            Self::Perplexity => perplexity,
            Self::NanMean => numpy::nanmean,
            _ => mean,
        }
    }

    fn weighted_statistic(self) -> fn(&[(f64, f64)]) -> f64 {
        match self {
            Self::BitsPerByte => bits_per_byte,
            _ => weighted_perplexity,
        }
    }

    /// Checks that every score has the kind this aggregation takes.
    fn typed(self, scores: &[DocScore]) -> Result<Typed, CoreError> {
        let mismatch = |got| CoreError::ScoreKind {
            aggregation: self.as_str(),
            got,
        };
        if self.takes_items() {
            return Err(mismatch("numeric"));
        }
        if self.is_weighted() {
            let pairs = scores.iter().map(|s| match *s {
                DocScore::Weighted(ll, w) => Ok((ll, w)),
                DocScore::Value(_) => Err(mismatch("plain")),
            });
            Ok(Typed::Weighted(pairs.collect::<Result<_, _>>()?))
        } else {
            let values = scores.iter().map(|s| match *s {
                DocScore::Value(x) => Ok(x),
                DocScore::Weighted(..) => Err(mismatch("weighted")),
            });
            Ok(Typed::Plain(values.collect::<Result<_, _>>()?))
        }
    }
}

enum Typed {
    Plain(Vec<f64>),
    Weighted(Vec<(f64, f64)>),
}

impl FromStr for Aggregation {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| CoreError::UnknownAggregation(s.to_owned()))
    }
}

impl fmt::Display for Aggregation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// lm-eval's `median`: `sorted(arr)[len(arr) // 2]`.
///
/// # Panics
/// On an empty slice, where Python raises `IndexError`.
pub fn median(xs: &[f64]) -> f64 {
    let mut sorted = xs.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// lm-eval's `perplexity` aggregation: `exp(-mean(lls))`.
pub fn perplexity(lls: &[f64]) -> f64 {
    (-mean(lls)).exp()
}

/// lm-eval's `weighted_mean`: `sum(lls) / sum(weights)`.
fn weighted_mean(pairs: &[(f64, f64)]) -> f64 {
    stats::py_sum(pairs.iter().map(|p| p.0)) / stats::py_sum(pairs.iter().map(|p| p.1))
}

/// lm-eval's `weighted_perplexity`: `exp(-weighted_mean)`.
pub fn weighted_perplexity(pairs: &[(f64, f64)]) -> f64 {
    (-weighted_mean(pairs)).exp()
}

/// lm-eval's `bits_per_byte`: `-weighted_mean / ln 2`.
pub fn bits_per_byte(pairs: &[(f64, f64)]) -> f64 {
    -weighted_mean(pairs) / std::f64::consts::LN_2
}

/// The result of one `loglikelihood` request.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Loglikelihood {
    /// Sum of the continuation tokens' log-probabilities (natural log).
    pub loglikelihood: f64,
    /// Whether every continuation token was the argmax.
    pub is_greedy: bool,
}

/// The gold answer of a multiple-choice document, as `doc_to_target` (or `doc_to_text` for
/// multiple-input tasks) returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Gold {
    /// One choice index. Indices past the last choice are replaced by lm-eval's `-100` and
    /// scored wrong; negative indices are kept, so they never match for `acc` but, being
    /// Python indices, select a choice from the end for `exact_match`.
    Index(i64),
    /// Several acceptable indices (a task whose first document's target is a list:
    /// `multiple_target`); a prediction in the list is right.
    Indices(Vec<i64>),
}

impl Gold {
    /// A gold given as choice text: its index in `choices`, or `-100` if absent.
    pub fn from_choice_text(choices: &[String], gold: &str) -> Self {
        let index = choices.iter().position(|c| c == gold);
        Self::Index(index.map_or(MISSING_GOLD, |i| i as i64))
    }

    /// Replaces indices `>= choices` by `-100`, as `process_results` does.
    fn resolved(&self, choices: usize) -> Vec<i64> {
        let resolve = |&i: &i64| if i < choices as i64 { i } else { MISSING_GOLD };
        match self {
            Self::Index(i) => vec![resolve(i)],
            Self::Indices(indices) => indices.iter().map(resolve).collect(),
        }
    }
}

/// lm-eval's marker for a gold label outside the choices.
const MISSING_GOLD: i64 = -100;

/// The model outputs for one multiple-choice document.
#[derive(Debug, Clone, Copy)]
pub struct MultipleChoice<'a> {
    /// The choice strings from `doc_to_choice`, without the target delimiter.
    pub choices: &'a [String],
    /// One `(context, delimiter + choice)` result per choice.
    pub results: &'a [Loglikelihood],
    /// For `acc_mutual_info`: the log-likelihood of each `delimiter + choice` after an empty
    /// context.
    pub unconditional: Option<&'a [f64]>,
    /// For `acc_token_norm`: the number of continuation tokens of each choice.
    pub token_counts: Option<&'a [usize]>,
}

/// `process_results` for `output_type: multiple_choice` (`lm_eval/api/task.py`).
///
/// Always returns `acc`, `acc_norm`, `acc_bytes` and `exact_match`; `acc_mutual_info` and
/// `acc_token_norm` when their inputs are given. Predictions are `numpy.argmax` (the first
/// maximum; the first NaN if any, e.g. `0 / 0` for an empty choice).
///
/// lm-eval compares `argmax == gold` for `acc_mutual_info` even with several gold indices,
/// which raises for more than one; membership is used here, which agrees with lm-eval
/// wherever lm-eval produces a value.
pub fn score_multiple_choice(
    doc: &MultipleChoice<'_>,
    gold: &Gold,
) -> Result<Vec<(MetricName, DocScore)>, CoreError> {
    let n = doc.choices.len();
    let check = |len: usize| {
        if len == n {
            Ok(())
        } else {
            Err(CoreError::ChoiceCount(len, n))
        }
    };
    check(doc.results.len())?;
    let golds = gold.resolved(n);
    let lls: Vec<f64> = doc.results.iter().map(|r| r.loglikelihood).collect();
    let correct = |scores: Vec<f64>| DocScore::Value(indicator(golds.contains(&argmax(&scores))));
    let per = |lengths: Vec<f64>| lls.iter().zip(lengths).map(|(ll, len)| ll / len).collect();
    let chars = doc
        .choices
        .iter()
        .map(|c| c.chars().count() as f64)
        .collect();
    let bytes = doc.choices.iter().map(|c| c.len() as f64).collect();

    let mut scores = vec![
        (MetricName::Acc, correct(lls.clone())),
        (MetricName::AccNorm, correct(per(chars))),
        (MetricName::AccBytes, correct(per(bytes))),
        (
            MetricName::ExactMatch,
            DocScore::Value(gold_is_greedy(doc.results, &golds)),
        ),
    ];
    if let Some(unconditional) = doc.unconditional {
        check(unconditional.len())?;
        let mutual_info = lls.iter().zip(unconditional).map(|(c, u)| c - u).collect();
        scores.push((MetricName::AccMutualInfo, correct(mutual_info)));
    }
    if let Some(tokens) = doc.token_counts {
        check(tokens.len())?;
        scores.push((
            MetricName::AccTokenNorm,
            correct(per(tokens.iter().map(|&t| t as f64).collect())),
        ));
    }
    Ok(scores)
}

/// The items of the corpus-level metrics of a multiple-choice document
/// (`ConfigurableTask.process_results`): `f1` and `mcc` get `(gold, argmax)`, `brier_score`
/// gets `(gold, softmax(lls))`; the gold after lm-eval's `-100` replacement, a list for
/// several golds.
pub fn multiple_choice_items(
    doc: &MultipleChoice<'_>,
    gold: &Gold,
) -> Result<Vec<(MetricName, Value)>, CoreError> {
    let n = doc.choices.len();
    if doc.results.len() != n {
        return Err(CoreError::ChoiceCount(doc.results.len(), n));
    }
    let golds = gold.resolved(n);
    let lls: Vec<f64> = doc.results.iter().map(|r| r.loglikelihood).collect();
    let gold = match gold {
        Gold::Index(_) => Value::from(golds[0]),
        Gold::Indices(_) => Value::from(golds),
    };
    let pair = Value::from(vec![gold.clone(), Value::from(argmax(&lls))]);
    let probabilities: Vec<Value> = numpy::softmax(&lls).into_iter().map(Value::from).collect();
    Ok(vec![
        (MetricName::F1, pair.clone()),
        (MetricName::Mcc, pair),
        (
            MetricName::BrierScore,
            Value::from(vec![gold, Value::from(probabilities)]),
        ),
    ])
}

/// 1.0 for true, 0.0 for false (Python's `1.0 if ... else 0.0` / `int(bool)`).
fn indicator(condition: bool) -> f64 {
    f64::from(u8::from(condition))
}

/// `numpy.argmax`: the first maximum, or the first NaN. `i64` to compare with gold indices.
fn argmax(xs: &[f64]) -> i64 {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x.is_nan() {
            return i as i64;
        }
        if x > xs[best] {
            best = i;
        }
    }
    best as i64
}

/// MC `exact_match`: `is_greedy[gold]` (any gold for several), `-100` counting as 0. Negative
/// golds index from the end, as in Python; below `-len` lm-eval raises `IndexError`, scored 0
/// here.
fn gold_is_greedy(results: &[Loglikelihood], golds: &[i64]) -> f64 {
    let n = results.len() as i64;
    let greedy = |g: i64| {
        let index = if g < 0 { g + n } else { g };
        g != MISSING_GOLD && (0..n).contains(&index) && results[index as usize].is_greedy
    };
    indicator(golds.iter().any(|&g| greedy(g)))
}

/// `process_results` for `output_type: loglikelihood`: `perplexity` (the log-likelihood,
/// aggregated by `exp(-mean)`) and `acc` (`is_greedy`).
pub fn score_loglikelihood(result: Loglikelihood) -> Vec<(MetricName, DocScore)> {
    vec![
        (
            MetricName::Perplexity,
            DocScore::Value(result.loglikelihood),
        ),
        (
            MetricName::Acc,
            DocScore::Value(indicator(result.is_greedy)),
        ),
    ]
}

/// `process_results` for `output_type: loglikelihood_rolling`: the document log-likelihood
/// weighted by the word count (`len(re.split(r"\s+", text))`) and UTF-8 byte count of
/// `text`, plus `token_perplexity` weighted by `token_count` (moebench extension).
///
/// `text` is what lm-eval counts, `doc_to_target(doc)`; for WikiText that is the original
/// page, not the detokenised text the model scored.
pub fn score_rolling(
    loglikelihood: f64,
    text: &str,
    token_count: usize,
) -> Vec<(MetricName, DocScore)> {
    let bytes = text.len() as f64;
    vec![
        (
            MetricName::WordPerplexity,
            DocScore::Weighted(loglikelihood, pystr::count_words(text) as f64),
        ),
        (
            MetricName::BytePerplexity,
            DocScore::Weighted(loglikelihood, bytes),
        ),
        (
            MetricName::BitsPerByte,
            DocScore::Weighted(loglikelihood, bytes),
        ),
        (
            MetricName::TokenPerplexity,
            DocScore::Weighted(loglikelihood, token_count as f64),
        ),
    ]
}

/// The options of the generation `exact_match` metric (its `metric_list` keyword arguments).
#[derive(Debug, Clone, Default)]
pub struct ExactMatch {
    /// Patterns removed (`re.sub(p, "", x)`) in order from prediction and references.
    pub regexes_to_ignore: Vec<PyRegex>,
    /// Compare lowercased (`str.lower`).
    pub ignore_case: bool,
    /// Remove ASCII punctuation (`string.punctuation`).
    pub ignore_punctuation: bool,
    /// Remove ASCII digits (`string.digits`).
    pub ignore_numbers: bool,
}

impl ExactMatch {
    /// Reads the keyword arguments of an `exact_match` entry of `metric_list` (an object
    /// without `metric`, `aggregation` and `higher_is_better`, or null).
    pub fn from_config(args: &Value) -> Result<Self, CoreError> {
        let mut options = Self::default();
        let Some(map) = args.as_object() else {
            return match args {
                Value::Null => Ok(options),
                other => Err(exact_match_error(format!(
                    "expected an object, got {other}"
                ))),
            };
        };
        for (key, value) in map {
            // `exact_match_hf_evaluate` tests the flags with `if flag:`: Python truthiness
            // (lm-eval's YAMLs contain e.g. a multi-line plain scalar `true - "." …`).
            let flag = || -> Result<bool, CoreError> { Ok(python_truthy(value)) };
            match key.as_str() {
                "ignore_case" => options.ignore_case = flag()?,
                "ignore_punctuation" => options.ignore_punctuation = flag()?,
                "ignore_numbers" => options.ignore_numbers = flag()?,
                "regexes_to_ignore" => options.regexes_to_ignore = regex_list(value)?,
                _ => return Err(exact_match_error(format!("unexpected argument `{key}`"))),
            }
        }
        Ok(options)
    }

    /// lm-eval's `exact_match_hf_evaluate` for one prediction: 1.0 if it equals any
    /// reference after normalisation, else 0.0.
    ///
    /// Reproduces numpy's fixed-width strings: trailing NULs are dropped, and `str.lower`
    /// results are cut to the longest input of their array (`np.char.lower` keeps the dtype),
    /// which matters only when lowercasing lengthens a string (`"İ"` → `"i̇"`).
    pub fn score<S: AsRef<str>>(&self, prediction: &str, references: &[S]) -> f64 {
        let prediction = self.normalize(&[prediction]).remove(0);
        let references: Vec<&str> = references.iter().map(AsRef::as_ref).collect();
        indicator(self.normalize(&references).contains(&prediction))
    }

    /// Normalises the strings of one numpy array (predictions or references).
    fn normalize(&self, texts: &[&str]) -> Vec<String> {
        let stripped: Vec<String> = texts
            .iter()
            .map(|t| {
                self.regexes_to_ignore
                    .iter()
                    .fold((*t).to_owned(), |acc, re| re.remove_all(&acc))
            })
            .collect();
        let width = stripped
            .iter()
            .map(|s| s.chars().count())
            .max()
            .unwrap_or(0);
        stripped
            .into_iter()
            .map(|s| {
                let mut s = s.trim_end_matches('\0').to_owned();
                if self.ignore_case {
                    s = s.to_lowercase().chars().take(width).collect();
                }
                if self.ignore_punctuation {
                    s.retain(|c| !c.is_ascii_punctuation());
                }
                if self.ignore_numbers {
                    s.retain(|c| !c.is_ascii_digit());
                }
                s
            })
            .collect()
    }
}

/// Python's `bool(value)` for a JSON value.
fn python_truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|x| x != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(map) => !map.is_empty(),
    }
}

fn exact_match_error(message: String) -> CoreError {
    CoreError::argument("exact_match", message)
}

fn regex_list(value: &Value) -> Result<Vec<PyRegex>, CoreError> {
    let not_strings =
        || exact_match_error("`regexes_to_ignore` must be a list of strings".to_owned());
    let items = value.as_array().ok_or_else(not_strings)?;
    items
        .iter()
        .map(|p| PyRegex::new(p.as_str().ok_or_else(not_strings)?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    fn results(items: &[(f64, bool)]) -> Vec<Loglikelihood> {
        items
            .iter()
            .map(|&(loglikelihood, is_greedy)| Loglikelihood {
                loglikelihood,
                is_greedy,
            })
            .collect()
    }

    fn get(scores: &[(MetricName, DocScore)], metric: MetricName) -> f64 {
        match scores.iter().find(|(m, _)| *m == metric) {
            Some((_, DocScore::Value(x))) => *x,
            other => panic!("{metric}: {other:?}"),
        }
    }

    /// `[acc, acc_norm, acc_bytes, exact_match]`, then `acc_mutual_info` when given.
    fn mc(
        choices: &[&str],
        lls: &[(f64, bool)],
        gold: Gold,
        unconditional: Option<&[f64]>,
    ) -> Vec<f64> {
        let choices = strings(choices);
        let results = results(lls);
        let doc = MultipleChoice {
            choices: &choices,
            results: &results,
            unconditional,
            token_counts: None,
        };
        let scores = score_multiple_choice(&doc, &gold).unwrap();
        let mut metrics = vec![
            MetricName::Acc,
            MetricName::AccNorm,
            MetricName::AccBytes,
            MetricName::ExactMatch,
        ];
        if unconditional.is_some() {
            metrics.push(MetricName::AccMutualInfo);
        }
        metrics.into_iter().map(|m| get(&scores, m)).collect()
    }

    /// Expected values: lm-eval 0.4.13's `ConfigurableTask.process_results` itself, called in
    /// CPython 3.11.7 + numpy 2.4 on a stub task with `OUTPUT_TYPE = "multiple_choice"` and
    /// the same choices, `(ll, is_greedy)` results and gold (`multiple_target` set for list
    /// golds; unconditional results appended for `acc_mutual_info`).
    #[test]
    fn multiple_choice_matches_lm_eval() {
        let paris = ["Paris", "London", "Berlin", "Rome"];
        let tie = [(-2.1, false), (-1.5, true), (-3.0, false), (-1.5, false)];
        assert_eq!(mc(&paris, &tie, Gold::Index(1), None), [1.0, 1.0, 1.0, 1.0]);

        let unicode = ["café", "naïve choice", "日本語", "xx"];
        let lls = [(-6.0, false), (-13.0, false), (-5.0, true), (-2.5, false)];
        assert_eq!(
            mc(&unicode, &lls, Gold::Index(2), None),
            [0.0, 0.0, 1.0, 1.0]
        );

        let yes_no = ["yes", "no", "maybe"];
        let lls = [(-1.0, true), (-1.2, false), (-4.0, false)];
        let unconditional = [-0.5, -1.5, -6.0];
        assert_eq!(
            mc(&yes_no, &lls, Gold::Index(2), Some(&unconditional)),
            [0.0, 0.0, 0.0, 0.0, 1.0]
        );

        let ab = ["a", "b"];
        let lls = [(-1.0, true), (-2.0, false)];
        assert_eq!(mc(&ab, &lls, Gold::Index(5), None), [0.0; 4]);
        let abc = ["a", "b", "c"];
        let lls = [(-1.0, false), (-2.0, false), (-3.0, true)];
        assert_eq!(mc(&abc, &lls, Gold::Index(-1), None), [0.0, 0.0, 0.0, 1.0]);
    }

    /// Same provenance as `multiple_choice_matches_lm_eval`.
    #[test]
    fn gold_variants_match_lm_eval() {
        let ab = strings(&["a", "b"]);
        let lls = [(-1.0, true), (-2.0, false)];
        assert_eq!(
            mc(&["a", "b"], &lls, Gold::from_choice_text(&ab, "b"), None),
            [0.0; 4]
        );
        let lls = [(-1.0, true), (-2.0, true)];
        assert_eq!(Gold::from_choice_text(&ab, "z"), Gold::Index(-100));
        assert_eq!(
            mc(&["a", "b"], &lls, Gold::from_choice_text(&ab, "z"), None),
            [0.0; 4]
        );

        let wxyz = ["w", "x", "y", "z"];
        let lls = [(-3.0, false), (-2.0, false), (-1.0, false), (-4.0, true)];
        assert_eq!(
            mc(&wxyz, &lls, Gold::Indices(vec![0, 2]), None),
            [1.0, 1.0, 1.0, 0.0]
        );
        let lls = [(-3.0, false), (-2.0, true)];
        assert_eq!(
            mc(&["w", "x"], &lls, Gold::Indices(vec![0, 7]), None),
            [0.0; 4]
        );
        let lls = [(-3.0, false), (-2.0, false), (-1.0, true)];
        let unconditional = [-1.0, -2.5, -0.5];
        let got = mc(
            &["w", "x", "y"],
            &lls,
            Gold::Indices(vec![1]),
            Some(&unconditional),
        );
        assert_eq!(got, [0.0, 0.0, 0.0, 0.0, 1.0]);
    }

    /// An empty choice divides by zero: `0 / 0` is NaN, which numpy's argmax picks; a negative
    /// log-likelihood gives `-inf`. Same provenance as `multiple_choice_matches_lm_eval`.
    #[test]
    fn empty_choices_follow_numpy() {
        let lls = [(0.0, false), (-1.0, true)];
        assert_eq!(
            mc(&["", "a"], &lls, Gold::Index(1), None),
            [0.0, 0.0, 0.0, 1.0]
        );
        let lls = [(-0.5, false), (-1.0, true)];
        assert_eq!(
            mc(&["", "a"], &lls, Gold::Index(1), None),
            [0.0, 1.0, 1.0, 1.0]
        );
    }

    #[test]
    fn acc_token_norm_divides_by_token_counts() {
        let choices = strings(&["one", "two"]);
        let results = results(&[(-2.0, false), (-3.0, false)]);
        let doc = MultipleChoice {
            choices: &choices,
            results: &results,
            unconditional: None,
            token_counts: Some(&[1, 3]),
        };
        let scores = score_multiple_choice(&doc, &Gold::Index(1)).unwrap();
        assert_eq!(get(&scores, MetricName::Acc), 0.0);
        assert_eq!(get(&scores, MetricName::AccTokenNorm), 1.0);
        let short = MultipleChoice {
            token_counts: Some(&[1]),
            ..doc
        };
        assert!(matches!(
            score_multiple_choice(&short, &Gold::Index(0)),
            Err(CoreError::ChoiceCount(1, 2))
        ));
    }

    /// lm-eval's `process_results` for `loglikelihood_rolling` on this WikiText-like page gives
    /// `{'word_perplexity': (-1234.5, 14), 'byte_perplexity': (-1234.5, 73), 'bits_per_byte':
    /// (-1234.5, 73)}`, and for `loglikelihood` on `(-3.25, True)` gives
    /// `{'perplexity': -3.25, 'acc': 1}`.
    #[test]
    fn rolling_and_loglikelihood_match_lm_eval() {
        let page = " = Valkyria Chronicles III = \n\n Senjō no Valkyria 3 : <unk> Chronicles \n";
        let scores = score_rolling(-1234.5, page, 20);
        let want = [
            (
                MetricName::WordPerplexity,
                DocScore::Weighted(-1234.5, 14.0),
            ),
            (
                MetricName::BytePerplexity,
                DocScore::Weighted(-1234.5, 73.0),
            ),
            (MetricName::BitsPerByte, DocScore::Weighted(-1234.5, 73.0)),
            (
                MetricName::TokenPerplexity,
                DocScore::Weighted(-1234.5, 20.0),
            ),
        ];
        assert_eq!(scores, want);
        let scores = score_loglikelihood(Loglikelihood {
            loglikelihood: -3.25,
            is_greedy: true,
        });
        assert_eq!(get(&scores, MetricName::Perplexity), -3.25);
        assert_eq!(get(&scores, MetricName::Acc), 1.0);
    }

    /// lm-eval 0.4.13's aggregation and stderr functions in CPython 3.11.7 (with 3.12's
    /// compensated `sum`, see `stats`) on LLS and (LLS, WEIGHTS):
    /// `stderr_for_metric(mean, 100000)`, `stderr_for_metric(perplexity, 1000)`,
    /// `stderr_for_metric(median, 700)`, `bootstrap_stderr(weighted_perplexity | bits_per_byte,
    /// pairs, 1000)`; `stderr_for_metric` returns None for the weighted family.
    #[test]
    fn aggregations_match_lm_eval() {
        const LLS: [f64; 6] = [-2.5, -0.75, -3.125, -1.0, -0.3, -1.7];
        const WEIGHTS: [f64; 6] = [4.0, 2.0, 7.0, 3.0, 1.0, 5.0];
        let plain: Vec<DocScore> = LLS.iter().map(|&x| DocScore::Value(x)).collect();
        let weighted: Vec<DocScore> = LLS
            .iter()
            .zip(WEIGHTS)
            .map(|(&l, w)| DocScore::Weighted(l, w))
            .collect();
        let cases = [
            (
                Aggregation::Mean,
                &plain,
                -1.5625,
                0.443835085739437,
                100_000,
            ),
            (Aggregation::Median, &plain, -1.0, 0.630609447147275, 700),
            (
                Aggregation::Perplexity,
                &plain,
                4.770733181967603,
                2.188723486924525,
                1000,
            ),
            (
                Aggregation::WeightedPerplexity,
                &weighted,
                1.5313295785661307,
                0.07315077860011307,
                1000,
            ),
            (
                Aggregation::BitsPerByte,
                &weighted,
                0.6147848185606378,
                0.06860742364120949,
                1000,
            ),
        ];
        for (aggregation, scores, value, stderr, iters) in cases {
            assert_eq!(
                aggregation.aggregate(scores).unwrap(),
                value,
                "{aggregation}"
            );
            assert_eq!(
                aggregation.stderr(scores, iters).unwrap(),
                Some(stderr),
                "{aggregation}"
            );
            assert_eq!(
                aggregation.lm_eval_reports_stderr(),
                !aggregation.is_weighted()
            );
            assert_eq!(aggregation.stderr(scores, 0).unwrap(), None);
            assert_eq!(aggregation.stderr(&scores[..1], iters).unwrap(), None);
        }
        assert!(matches!(
            Aggregation::Mean.aggregate(&weighted),
            Err(CoreError::ScoreKind {
                got: "weighted",
                ..
            })
        ));
        assert!(Aggregation::BitsPerByte.aggregate(&plain).is_err());
        assert!(matches!(
            Aggregation::Mean.aggregate(&[]),
            Err(CoreError::NoScores)
        ));
    }

    #[test]
    fn names_round_trip_and_registry_defaults() {
        for metric in MetricName::ALL {
            assert_eq!(metric.as_str().parse::<MetricName>().unwrap(), metric);
            let json = serde_json::to_string(&metric).unwrap();
            assert_eq!(json, format!("\"{metric}\""));
        }
        for aggregation in Aggregation::ALL {
            assert_eq!(
                aggregation.as_str().parse::<Aggregation>().unwrap(),
                aggregation
            );
        }
        assert!(matches!(
            "rouge1".parse::<MetricName>(),
            Err(CoreError::UnknownMetric(_))
        ));
        assert!("sum".parse::<Aggregation>().is_err());
        assert_eq!(
            MetricName::WordPerplexity.default_aggregation(),
            Aggregation::WeightedPerplexity
        );
        assert_eq!(
            MetricName::BitsPerByte.default_aggregation(),
            Aggregation::BitsPerByte
        );
        assert_eq!(
            MetricName::Perplexity.default_aggregation(),
            Aggregation::Perplexity
        );
        assert_eq!(MetricName::AccNorm.default_aggregation(), Aggregation::Mean);
        assert!(MetricName::AccMutualInfo.higher_is_better());
        assert!(!MetricName::TokenPerplexity.higher_is_better());
        assert!(MetricName::AccTokenNorm.is_moebench_extension());
        assert!(!MetricName::Acc.is_moebench_extension());
    }

    /// Expected values: lm-eval 0.4.13's `process_results` for `generate_until` with the
    /// registered `exact_match` metric and these keyword arguments (CPython 3.11.7,
    /// numpy 2.4.6), `multiple_target` set for list golds.
    #[test]
    fn generation_exact_match_matches_lm_eval() {
        let gsm8k = json!({"regexes_to_ignore": [",", "\\$", "(?s).*#### ", "\\.$"]});
        let case_punct = json!({"ignore_case": true, "ignore_punctuation": true});
        let case = json!({"ignore_case": true});
        let numbers = json!({"ignore_numbers": true});
        let punct = json!({"ignore_punctuation": true});
        let none = Value::Null;
        let cases: [(&str, &[&str], &Value, f64); 15] = [
            ("72", &["72"], &none, 1.0),
            (" 72", &["72"], &none, 0.0),
            ("The Answer: 42!", &["the answer 42"], &case_punct, 1.0),
            ("abc123", &["abc"], &numbers, 1.0),
            ("x—y", &["xy"], &punct, 0.0),
            ("$1,000.", &["1000"], &gsm8k, 1.0),
            ("So the answer is #### 1,000", &["1000"], &gsm8k, 1.0),
            ("İ", &["i\u{307}"], &case, 0.0),
            ("İ", &["İ"], &case, 1.0),
            ("ΣΑΣ", &["σας"], &case, 1.0),
            ("a\0", &["a"], &none, 1.0),
            ("Paris", &["paris", "Paris, France"], &none, 0.0),
            ("PARIS", &["London", "paris"], &case, 1.0),
            ("Rome", &["London", "paris"], &case, 0.0),
            ("İ", &["xy", "i\u{307}"], &case, 0.0),
        ];
        for (prediction, references, args, want) in cases {
            let metric = ExactMatch::from_config(args).unwrap();
            assert_eq!(
                metric.score(prediction, references),
                want,
                "{prediction:?} {references:?} {args}"
            );
        }
    }

    #[test]
    fn exact_match_config_errors() {
        // Flags are tested for truthiness, as `if ignore_case:` does.
        let truthy = ExactMatch::from_config(&json!({"ignore_case": "true - \".\""})).unwrap();
        assert!(truthy.ignore_case);
        assert!(
            !ExactMatch::from_config(&json!({"ignore_case": 0}))
                .unwrap()
                .ignore_case
        );
        assert!(ExactMatch::from_config(&json!({"ignorecase": true})).is_err());
        assert!(ExactMatch::from_config(&json!({"regexes_to_ignore": [1]})).is_err());
        assert!(matches!(
            ExactMatch::from_config(&json!({"regexes_to_ignore": ["(a"]})),
            Err(CoreError::Regex { .. })
        ));
    }
}
