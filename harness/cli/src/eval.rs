//! `moebench eval MODEL --tasks …`: lm-eval compatible evaluation, written in lm-eval's
//! layout (`OUT/<model>/results_<date>.json`, and `samples_<task>_<date>.jsonl` with
//! `--log-samples`), the results also as `OUT/results.json`, and a markdown table on stdout.
use crate::common::ModelArgs;
use anyhow::{Context, Result};
use moebench_eval::lm::DEFAULT_SAMPLING_SEED;
use moebench_eval::results::{
    markdown_table, plan_tasks, results_json, write_lm_eval_outputs, RunConfig, TokenizerTokens,
};
use moebench_eval::{evaluate_task, EvalOptions, LanguageModel, LmSettings, TaskOutcome};
use moebench_model::cost::param_counts;
use moebench_model::device::{device_name, kind_name};
use moebench_runner::code::{check_confirmed, enable_code_execution, CodePolicy};
use moebench_runner::loaded::TokenBudget;
use moebench_runner::paths::task_dirs;
use moebench_suite::write_atomic;
use moebench_tasks::{Task, TaskIndex, DEFAULT_FEWSHOT_SEED};
use std::ffi::OsString;
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
    /// Output directory, laid out as lm-eval's `--output_path`: OUT/<model>/results_<date>.json
    /// (+ samples_<task>_<date>.jsonl), and OUT/results.json; a path ending in .json writes
    /// <stem>_<date>.json (and the samples) next to it.
    #[arg(long)]
    out: PathBuf,
    /// Also write per-sample records.
    #[arg(long)]
    log_samples: bool,
    /// Print lm-eval's results document on stdout instead of the markdown table.
    #[arg(long)]
    json: bool,
    /// Seed of sampled generations (tasks with `do_sample: true`).
    #[arg(long, default_value_t = DEFAULT_SAMPLING_SEED)]
    sampling_seed: u64,
    /// Run tasks that execute model-generated code (`unsafe_code: true`: HumanEval, MBPP),
    /// in moebench's sandbox (lm-eval's --confirm_run_unsafe_code).
    #[arg(long)]
    confirm_run_unsafe_code: bool,
    /// Where the OS forbids the sandbox's namespaces, run generated code anyway with resource
    /// limits only: the code can then reach the network and write wherever you can.
    #[arg(long, requires = "confirm_run_unsafe_code")]
    allow_unisolated_code: bool,
    /// Python interpreter that runs generated code.
    #[arg(long, default_value = "python3")]
    code_python: OsString,
    /// Encode every prefix from scratch instead of once per group of requests sharing it (A/B
    /// comparisons of the prefix KV cache; the results are the same up to float rounding).
    #[arg(long)]
    no_prefix_cache: bool,
    /// Decode one generation at a time without prompt-lookup drafts (A/B comparisons; the
    /// generations are the same up to float rounding).
    #[arg(long)]
    no_lookup_decoding: bool,
    /// Perplexity tasks: `gptq_concat:SEQLEN` or `strided:MAX_LENGTH:STRIDE` (token-level
    /// perplexity of the concatenated documents) instead of lm-eval's rolling windows.
    #[arg(long)]
    ppl_protocol: Option<String>,
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
    let nodes = args
        .tasks
        .iter()
        .map(|name| index.resolve(name))
        .collect::<Result<Vec<_>, _>>()?;
    let (specs, groups) = plan_tasks(nodes);
    let code_policy = CodePolicy {
        confirmed: args.confirm_run_unsafe_code,
        python: args.code_python.clone(),
        allow_unisolated: args.allow_unisolated_code,
    };
    let executing = specs.iter().filter(|s| s.config.unsafe_code);
    check_confirmed(
        &code_policy,
        executing.map(|s| s.name.as_str()),
        "pass --confirm-run-unsafe-code",
    )?;
    // Load every task (data, templates) before the model: bad tasks fail fast.
    let mut tasks = specs
        .into_iter()
        .map(|s| Task::load(s, &hub, args.num_fewshot))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(warning) =
        enable_code_execution(&mut tasks.iter_mut().collect::<Vec<_>>(), &code_policy)?
    {
        eprintln!("warning: {warning}");
    }
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
        prefix_cache: !args.no_prefix_cache,
        lookup_decoding: !args.no_lookup_decoding,
    };
    let lm = LanguageModel::new(model, &tokenizer, settings.clone())
        .with_sampling_seed(args.sampling_seed);
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
    let progress = TaskProgress::new(tasks.len());
    let outcomes: Vec<TaskOutcome> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let started = progress.start(i, t.name());
            let outcome =
                evaluate_task(&lm, t, &opts).with_context(|| format!("task {}", t.name()))?;
            progress.done(i, t.name(), started, outcome.n_effective);
            Ok(outcome)
        })
        .collect::<Result<_>>()?;
    progress.finish();
    let reference = loaded.checkpoint.reference.clone();
    let dtype = kind_name(model.kind);
    let run = RunConfig {
        model: "moebench".into(),
        model_args: format!("pretrained={reference},dtype={dtype}"),
        model_name: reference,
        model_repo: loaded.checkpoint.repo_id.clone(),
        model_sha: loaded.checkpoint.commit.clone(),
        model_num_parameters: param_counts(model, None).total,
        model_dtype: dtype.into(),
        device: device_name(model.device),
        batch_size: settings.batch_size,
        token_budget,
        token_budget_source,
        max_length: settings.max_length,
        prefix_cache: lm.prefix_cache().to_string(),
        lookup_decoding: lm.lookup_decoding(),
        limit: args.limit,
        bootstrap_iters: args.bootstrap_iters,
        fewshot_seed: args.seed,
        sampling_seed: args.sampling_seed,
        tokenizer: TokenizerTokens::of(&tokenizer),
        tokenizer_sha256: tokenizer.file_sha256()?,
        harness_version: env!("CARGO_PKG_VERSION").into(),
    };
    let timing = (start, now());
    let files = write_lm_eval_outputs(
        &args.out,
        &outcomes,
        &groups,
        &run,
        timing,
        args.log_samples,
    )?;
    if args.out.extension().is_none_or(|e| e != "json") {
        let doc = results_json(&outcomes, &groups, &run, timing);
        write_atomic(
            &args.out.join("results.json"),
            serde_json::to_string_pretty(&doc)?.as_bytes(),
        )?;
    }
    eprintln!("results: {}", files.results.display());
    match args.json {
        true => println!(
            "{}",
            serde_json::to_string_pretty(&results_json(&outcomes, &groups, &run, timing))?
        ),
        false => print!("{}", markdown_table(&outcomes)),
    }
    Ok(())
}

/// Which task is being evaluated and how long the finished ones took: a spinner with the
/// elapsed time on a terminal, one line per finished task otherwise (no ANSI codes when piped).
struct TaskProgress {
    bar: indicatif::ProgressBar,
    total: usize,
    terminal: bool,
}

impl TaskProgress {
    fn new(total: usize) -> Self {
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let bar = match terminal {
            true => indicatif::ProgressBar::new_spinner(),
            false => indicatif::ProgressBar::hidden(),
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                .expect("valid template"),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        Self {
            bar,
            total,
            terminal,
        }
    }

    fn start(&self, i: usize, name: &str) -> std::time::Instant {
        // Piped, only finished tasks are reported (one line each).
        if self.terminal {
            self.bar.reset_elapsed();
            self.bar
                .set_message(format!("task {}/{}: {name}", i + 1, self.total));
        }
        std::time::Instant::now()
    }

    fn done(&self, i: usize, name: &str, started: std::time::Instant, docs: usize) {
        let line = format!(
            "task {}/{}: {name}: {docs} documents in {:.1} s",
            i + 1,
            self.total,
            started.elapsed().as_secs_f64()
        );
        match self.terminal {
            true => self.bar.println(line),
            false => eprintln!("{line}"),
        }
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
