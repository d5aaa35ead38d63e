//! One task end to end: build lm-eval's requests, answer them, score every document, aggregate
//! with standard errors (closed form for means, bootstrap otherwise, perplexities included).
use crate::lm::LanguageModel;
use crate::EvalError;
use moebench_core::metrics::Gold;
use moebench_tasks::{
    build_instances, DocInstance, Expected, Request, Response, SampleScore, ScoredDoc, Task,
};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub limit: Option<usize>,
    pub fewshot_seed: u64,
    /// Bootstrap replicates for non-mean aggregations (lm-eval's default is 100000).
    pub bootstrap_iters: usize,
    /// Perplexity tasks (`loglikelihood_rolling`): a token-level protocol over the concatenated
    /// documents instead of lm-eval's per-document rolling windows.
    pub ppl_protocol: Option<crate::protocols::PplProtocol>,
}

/// One aggregated metric of a task.
#[derive(Debug, Clone, Serialize)]
pub struct MetricValue {
    pub value: f64,
    pub stderr: Option<f64>,
    pub higher_is_better: bool,
    /// True when lm-eval would print N/A for this stderr (we bootstrap it).
    pub stderr_is_moebench_extension: bool,
}

/// Per-document record, for `--log-samples` and for rescoring without the model.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct SampleRecord {
    pub doc_id: usize,
    /// The document, which lm-eval's sample files carry (not stored with suite results).
    #[serde(skip)]
    pub doc: Value,
    /// Generation tasks: each filter's output, shaped as lm-eval's `filtered_resps` entry
    /// (not stored with suite results).
    #[serde(skip)]
    pub filtered: Vec<(String, Value)>,
    pub doc_hash: String,
    pub prompt_hash: String,
    pub target_hash: String,
    pub target: Value,
    pub arguments: Vec<Value>,
    pub responses: Vec<Value>,
    pub metrics: BTreeMap<String, Value>,
}

#[derive(Debug, Clone)]
pub struct TaskOutcome {
    pub name: String,
    /// `"<metric>,<filter>"` → value.
    pub metrics: BTreeMap<String, MetricValue>,
    pub n_original: usize,
    pub n_effective: usize,
    pub samples: Vec<SampleRecord>,
    /// lm-eval's `task_hashes` entry (sha256 over the samples' hashes).
    pub task_hash: String,
    /// moebench's content hash of the task (config + data files), for caching.
    pub content_hash: String,
    pub version: Value,
    pub num_fewshot: usize,
    /// The resolved task configuration, as lm-eval's `configs[task]`.
    pub config: Value,
    /// `lm_eval_rolling(max_length=…)` for rolling-perplexity tasks (the protocol is part of
    /// the number), else `None`.
    pub ppl_protocol: Option<String>,
}

fn request_args(r: &Request) -> Value {
    match r {
        Request::Loglikelihood {
            context,
            continuation,
        } => json!({"arg_0": context, "arg_1": continuation}),
        Request::Rolling { text } => json!({"arg_0": text}),
        Request::Generate {
            context,
            until,
            max_gen_toks,
            sampling,
        } => {
            let mut kwargs = json!({"until": until, "max_gen_toks": max_gen_toks, "do_sample": sampling.is_some()});
            if let Some(s) = sampling {
                kwargs["temperature"] = json!(s.temperature);
                kwargs["top_p"] = json!(s.top_p);
                kwargs["top_k"] = json!(s.top_k);
                kwargs["draw"] = json!(s.draw);
            }
            json!({"arg_0": context, "arg_1": kwargs})
        }
    }
}

fn response_json(r: &Response) -> Value {
    match r {
        Response::Loglikelihood {
            loglikelihood,
            is_greedy,
            tokens,
        } => json!([loglikelihood, is_greedy, tokens]),
        Response::Rolling {
            loglikelihood,
            tokens,
        } => json!([loglikelihood, tokens]),
        Response::Generated(text) => json!(text),
    }
}

/// Reads a stored response back (the inverse of the sample log's encoding), for `rescore`.
pub fn response_from_json(v: &Value) -> Option<Response> {
    match v {
        Value::String(s) => Some(Response::Generated(s.clone())),
        Value::Array(a) if a.len() == 3 => Some(Response::Loglikelihood {
            loglikelihood: a[0].as_f64()?,
            is_greedy: a[1].as_bool()?,
            tokens: a[2].as_u64()? as usize,
        }),
        Value::Array(a) if a.len() == 2 => Some(Response::Rolling {
            loglikelihood: a[0].as_f64()?,
            tokens: a[1].as_u64()? as usize,
        }),
        _ => None,
    }
}

/// lm-eval scores a gold index outside the choices as wrong with only a warning; here it is bad
/// input, reported before any model time is spent.
fn check_golds(task: &Task, instances: &[DocInstance]) -> Result<(), EvalError> {
    for inst in instances {
        let Expected::Choice(gold) = &inst.expected else {
            continue;
        };
        let golds = match gold {
            Gold::Index(i) => vec![*i],
            Gold::Indices(v) => v.clone(),
        };
        let n = inst.choices.len() as i64;
        if let Some(bad) = golds.iter().find(|&&g| g < 0 || g >= n) {
            return Err(EvalError::Invalid(format!(
                "task `{}` ({}): doc {}: gold answer {bad} is out of range for {n} choices (fix doc_to_target / doc_to_choice)",
                task.name(),
                task.spec().path.display(),
                inst.doc_id
            )));
        }
    }
    Ok(())
}

pub fn evaluate_task(
    lm: &LanguageModel<'_>,
    task: &Task,
    opts: &EvalOptions,
) -> Result<TaskOutcome, EvalError> {
    if task.executes_code() && !task.code_execution_allowed() {
        return Err(EvalError::Invalid(format!(
            "task `{}` ({}) executes model-generated code (`unsafe_code: true`); confirm that you want it run, in moebench's sandbox, with --confirm-run-unsafe-code",
            task.name(),
            task.spec().path.display()
        )));
    }
    let rolling =
        task.spec().config.output_type == moebench_tasks::config::OutputType::LoglikelihoodRolling;
    let instances = build_instances(task, opts.fewshot_seed, opts.limit)?;
    check_golds(task, &instances)?;
    if let (true, Some(protocol)) = (rolling, opts.ppl_protocol) {
        return corpus_outcome(lm, task, &instances, protocol, opts);
    }
    let requests: Vec<Request> = instances
        .iter()
        .flat_map(|d| d.requests.iter().cloned())
        .collect();
    let responses = lm.run(&requests)?;
    check_finite(&responses)?;
    let mut per_doc = Vec::with_capacity(instances.len());
    let mut offset = 0;
    for inst in &instances {
        let n = inst.requests.len();
        per_doc.push((inst, responses[offset..offset + n].to_vec()));
        offset += n;
    }
    let mut outcome = score_task(task, &per_doc, opts)?;
    if rolling {
        outcome.ppl_protocol = Some(format!(
            "lm_eval_rolling(max_length={},context_len=1)",
            lm.settings.max_length
        ));
    }
    Ok(outcome)
}

/// Refuses non-finite log-likelihoods. NaN logits (a broken checkpoint or method) still score:
/// an argmax over NaNs picks some choice and the accuracy looks plausible, so the task fails
/// instead of reporting a number that means nothing.
fn check_finite(responses: &[Response]) -> Result<(), EvalError> {
    let bad = responses.iter().position(|r| match r {
        Response::Loglikelihood { loglikelihood, .. } | Response::Rolling { loglikelihood, .. } => {
            !loglikelihood.is_finite()
        }
        Response::Generated(_) => false,
    });
    match bad {
        None => Ok(()),
        Some(i) => Err(EvalError::NonFinite(format!(
            "request {i} of {} has log-likelihood {:?}",
            responses.len(),
            responses[i]
        ))),
    }
}

/// A perplexity task under a token-level protocol: one `perplexity,none` over the
/// concatenated documents (no per-document samples: the windows cross documents).
fn corpus_outcome(
    lm: &LanguageModel<'_>,
    task: &Task,
    instances: &[DocInstance],
    protocol: crate::protocols::PplProtocol,
    opts: &EvalOptions,
) -> Result<TaskOutcome, EvalError> {
    let texts: Vec<String> = instances
        .iter()
        .flat_map(|d| &d.requests)
        .filter_map(|r| match r {
            Request::Rolling { text } => Some(text.clone()),
            _ => None,
        })
        .collect();
    let ppl = crate::protocols::corpus_perplexity(lm, &texts, protocol, opts.bootstrap_iters)?;
    if !ppl.value.is_finite() {
        return Err(EvalError::NonFinite(format!(
            "corpus perplexity under {} is {}",
            protocol.describe(),
            ppl.value
        )));
    }
    let value = MetricValue {
        value: ppl.value,
        stderr: ppl.stderr,
        higher_is_better: false,
        stderr_is_moebench_extension: true,
    };
    let mut outcome = score_task(task, &[], opts)?;
    outcome.metrics = BTreeMap::from([("perplexity,none".to_owned(), value)]);
    outcome.n_effective = instances.len();
    outcome.task_hash = moebench_tasks::hashing::lm_eval_task_hash(
        instances,
        task.scorer().filter_names().len().max(1),
    );
    outcome.ppl_protocol = Some(protocol.describe());
    Ok(outcome)
}

/// Scores and aggregates documents whose responses are known (used by `evaluate_task` and by
/// rescoring from stored samples).
pub fn score_task(
    task: &Task,
    docs: &[(&DocInstance, Vec<Response>)],
    opts: &EvalOptions,
) -> Result<TaskOutcome, EvalError> {
    let mut by_metric: BTreeMap<String, Vec<SampleScore>> = BTreeMap::new();
    let mut samples = Vec::with_capacity(docs.len());
    // All documents at once: Python hooks (process_results, metric functions, filters) are
    // called once per filter pipeline, not once per document.
    let pairs: Vec<(&DocInstance, &[Response])> = docs
        .iter()
        .map(|(inst, resp)| (*inst, resp.as_slice()))
        .collect();
    let scored = task.scorer().score_documents(&pairs).map_err(|source| {
        moebench_tasks::TaskError::Score {
            task: task.name().to_owned(),
            doc: None,
            source: Box::new(source),
        }
    })?;
    for ((inst, resp), ScoredDoc { scores, filtered }) in docs.iter().zip(scored) {
        samples.push(SampleRecord {
            doc_id: inst.doc_id,
            doc: inst.doc.clone(),
            filtered,
            doc_hash: inst.hashes.doc.clone(),
            prompt_hash: inst.hashes.prompt.clone(),
            target_hash: inst.hashes.target.clone(),
            target: inst.target.clone(),
            arguments: inst.requests.iter().map(request_args).collect(),
            responses: resp.iter().map(response_json).collect(),
            metrics: scores
                .iter()
                .map(|(k, v)| (k.clone(), v.to_json()))
                .collect(),
        });
        for (key, score) in scores {
            by_metric.entry(key).or_default().push(score);
        }
    }
    let mut metrics = BTreeMap::new();
    for (key, scores) in &by_metric {
        // A key only a `process_results` hook reports is averaged, as lm-eval does.
        let (name, _) = key.split_once(',').unwrap_or((key, "none"));
        let spec = task.scorer().metric(name);
        let failed = |source| moebench_tasks::TaskError::Score {
            task: task.name().to_owned(),
            doc: None,
            source: Box::new(source),
        };
        metrics.insert(
            key.clone(),
            MetricValue {
                value: spec.aggregate(scores).map_err(failed)?,
                stderr: spec.stderr(scores, opts.bootstrap_iters).map_err(failed)?,
                higher_is_better: spec.higher_is_better,
                stderr_is_moebench_extension: !spec.lm_eval_reports_stderr(),
            },
        );
    }
    let instances: Vec<DocInstance> = docs.iter().map(|(i, _)| (*i).clone()).collect();
    let filters = task.scorer().filter_names().len().max(1);
    let task_hash = moebench_tasks::hashing::lm_eval_task_hash(&instances, filters);
    let config = &task.spec().config;
    Ok(TaskOutcome {
        name: task.name().to_string(),
        metrics,
        n_original: task.eval_docs().len(),
        n_effective: docs.len(),
        samples,
        task_hash,
        content_hash: task.content_hash().to_string(),
        version: config.version().cloned().unwrap_or(Value::Null),
        num_fewshot: task.num_fewshot(),
        config: serde_json::to_value(config).unwrap_or(Value::Null),
        ppl_protocol: None,
    })
}
