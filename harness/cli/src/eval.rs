//! `moebench eval MODEL --tasks …`: lm-eval compatible evaluation, written as lm-eval's
//! `results.json` (+ per-sample JSONL with `--log-samples`) and a markdown table on stdout.
use crate::common::ModelArgs;
use anyhow::{Context, Result};
use moebench_eval::results::{markdown_table, results_json, RunConfig};
use moebench_eval::{evaluate_task, EvalOptions, LanguageModel, LmSettings, TaskOutcome};
use moebench_model::cost::param_counts;
use moebench_model::device::{device_name, kind_name};
use moebench_runner::loaded::TokenBudget;
use moebench_runner::paths::task_dirs;
use moebench_suite::write_atomic;
use moebench_tasks::{GroupSpec, Task, TaskIndex, TaskNode, DEFAULT_FEWSHOT_SEED};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Comma-separated task, group or tag names, or task YAML paths.
    #[arg(long, value_delimiter = ',', required = true)]
    tasks: Vec<String>,
    /// Extra directories of task YAMLs (searched after the shipped suites/tasks).
    #[arg(long = "tasks-dir")]
    tasks_dirs: Vec<PathBuf>,
    /// Override the tasks' `num_fewshot`.
    #[arg(long)]
    num_fewshot: Option<usize>,
    /// Evaluate only the first N documents of each task.
    #[arg(long)]
    limit: Option<usize>,
    /// Most sequences per forward pass.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Most padded tokens per forward pass (bounds memory; long inputs still run alone):
    /// `auto` (from the memory free on the device) or a number.
    #[arg(long, default_value = "auto")]
    token_budget: TokenBudget,
    /// Longest input in tokens (default: the model's max_position_embeddings, as lm-eval).
    #[arg(long)]
    max_length: Option<usize>,
    /// Few-shot sampling seed (lm-eval's fewshot_random_seed).
    #[arg(long, default_value_t = DEFAULT_FEWSHOT_SEED)]
    seed: u64,
    /// Bootstrap replicates for stderrs of non-mean metrics.
    #[arg(long, default_value_t = 1000)]
    bootstrap_iters: usize,
    /// Output directory for results.json (and samples_<task>.jsonl).
    #[arg(long)]
    out: PathBuf,
    /// Also write per-sample records.
    #[arg(long)]
    log_samples: bool,
    /// Perplexity tasks: `gptq_concat:SEQLEN` or `strided:MAX_LENGTH:STRIDE` (token-level
    /// perplexity of the concatenated documents) instead of lm-eval's rolling windows.
    #[arg(long)]
    ppl_protocol: Option<String>,
}

/// Flattens resolved nodes into tasks (in order, each once) and the groups to aggregate,
/// each over all its leaf tasks (lm-eval's `Group.aggregate` over `get_all_tasks()`, so a
/// group of groups gets its own score).
fn flatten(
    node: TaskNode,
    tasks: &mut Vec<moebench_tasks::TaskSpec>,
    groups: &mut Vec<(GroupSpec, Vec<String>)>,
) {
    match node {
        TaskNode::Task(spec) => {
            if !tasks.iter().any(|t| t.name == spec.name) {
                tasks.push(spec);
            }
        }
        TaskNode::Tag { children, .. } => {
            children.into_iter().for_each(|c| flatten(c, tasks, groups))
        }
        TaskNode::Group { spec, children } => {
            let names = children
                .iter()
                .flat_map(TaskNode::tasks)
                .map(|t| t.name.clone())
                .collect();
            groups.push((spec, names));
            children.into_iter().for_each(|c| flatten(c, tasks, groups));
        }
    }
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

pub fn run(args: Args) -> Result<()> {
    let start = now();
    let hub = args.model.hub.config()?;
    let index = TaskIndex::scan(&task_dirs(&args.tasks_dirs))?;
    for (path, reason) in index.skipped() {
        eprintln!("warning: skipped {}: {reason}", path.display());
    }
    let (mut specs, mut groups) = (Vec::new(), Vec::new());
    for name in &args.tasks {
        flatten(index.resolve(name)?, &mut specs, &mut groups);
    }
    // Load every task (data, templates) before the model: bad tasks fail fast.
    let tasks = specs
        .into_iter()
        .map(|s| Task::load(s, &hub, args.num_fewshot))
        .collect::<Result<Vec<_>, _>>()?;
    let loaded = args.model.load()?;
    let tokenizer = loaded.tokenizer()?;
    let model = &loaded.model;
    let max_length = args
        .max_length
        .unwrap_or_else(|| LanguageModel::default_max_length(model));
    let (token_budget, token_budget_source) = args.token_budget.resolve(model, max_length);
    let settings = LmSettings {
        max_length,
        batch_size: args.batch_size.max(1),
        token_budget,
    };
    let lm = LanguageModel::new(model, &tokenizer, settings.clone());
    let opts = EvalOptions {
        limit: args.limit,
        fewshot_seed: args.seed,
        bootstrap_iters: args.bootstrap_iters,
        ppl_protocol: args
            .ppl_protocol
            .as_deref()
            .map(moebench_eval::protocols::PplProtocol::parse)
            .transpose()?,
    };
    let outcomes: Vec<TaskOutcome> = tasks
        .iter()
        .map(|t| evaluate_task(&lm, t, &opts).with_context(|| format!("task {}", t.name())))
        .collect::<Result<_>>()?;
    let run = RunConfig {
        model: loaded.checkpoint.reference.clone(),
        model_repo: loaded.checkpoint.repo_id.clone(),
        model_sha: loaded.checkpoint.commit.clone(),
        model_num_parameters: param_counts(model, None).total,
        model_dtype: kind_name(model.kind).into(),
        device: device_name(model.device),
        batch_size: settings.batch_size,
        token_budget,
        token_budget_source,
        max_length: settings.max_length,
        limit: args.limit,
        bootstrap_iters: args.bootstrap_iters,
        fewshot_seed: args.seed,
        tokenizer_sha256: tokenizer.file_sha256()?,
        harness_version: env!("CARGO_PKG_VERSION").into(),
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let doc = results_json(&outcomes, &groups, &run, (start, now()));
    write_atomic(
        &args.out.join("results.json"),
        serde_json::to_string_pretty(&doc)?.as_bytes(),
    )?;
    if args.log_samples {
        for t in &outcomes {
            let lines: Vec<String> = t
                .samples
                .iter()
                .map(serde_json::to_string)
                .collect::<Result<_, _>>()?;
            write_atomic(
                &args.out.join(format!("samples_{}.jsonl", t.name)),
                (lines.join("\n") + "\n").as_bytes(),
            )?;
        }
    }
    print!("{}", markdown_table(&outcomes));
    Ok(())
}
