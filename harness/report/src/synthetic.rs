//! Synthetic run directories, written through the real run store ([`RunStore`]), for tests
//! and for trying the report without running a model.
//!
//! Document `i` of a task is answered correctly by a row when a uniform draw keyed by (model
//! label, task, i) falls below the row's accuracy: rows of the same model share their draws,
//! so lowering a row's accuracy between two runs flips exactly the documents in between, as a
//! real regression of a method would.
use moebench_suite::suite::Target;
use moebench_suite::{
    LayerLoads, Measurement, Record, RecordKind, RoutingLog, RunInfo, RunStore, SuiteError,
    HARNESS_VERSION,
};
use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;

/// One model × method row.
#[derive(Debug, Clone, PartialEq)]
pub struct RowSpec {
    pub model: String,
    pub method: String,
    /// Probability of a correct answer (`acc`; `acc_norm` gets 0.03 more).
    pub accuracy: f64,
    /// Answers changed without changing the score much: the first `noise` correct documents
    /// become wrong and the first `noise − 1` wrong ones right (a net loss of one document).
    pub noise: usize,
    pub params_total: f64,
    pub params_active: f64,
    pub flops_per_token: f64,
    pub bytes_per_decode_token: f64,
    /// Batch-1 decode throughput; `tpot_ms_b1` is its inverse.
    pub decode_tokens_per_s_b1: f64,
    pub peak_rss_mib: f64,
}

impl RowSpec {
    /// A row whose costs all scale with `scale` against a 135M-parameter dense model (bytes as
    /// float32 weights), decoding at `tokens_per_s`.
    pub fn scaled(model: &str, method: &str, accuracy: f64, scale: f64, tokens_per_s: f64) -> Self {
        Self {
            model: model.into(),
            method: method.into(),
            accuracy,
            noise: 0,
            params_total: 135e6 * scale,
            params_active: 135e6 * scale,
            flops_per_token: 270e6 * scale,
            bytes_per_decode_token: 4.0 * 135e6 * scale,
            decode_tokens_per_s_b1: tokens_per_s,
            peak_rss_mib: 600.0 * scale,
        }
    }

    /// The method name of the label: up to the first `-` or `[`.
    fn method_name(&self) -> &str {
        self.method.split(['-', '[']).next().unwrap_or_default()
    }
}

/// What to write.
#[derive(Debug, Clone, PartialEq)]
pub struct Synthetic {
    pub suite: String,
    pub start_time: String,
    pub rows: Vec<RowSpec>,
    /// Multiple-choice tasks (`acc`, `acc_norm`).
    pub tasks: Vec<String>,
    /// Adds `wikitext` with `word_perplexity` (lower is better, no per-document number).
    pub perplexity: bool,
    pub docs: usize,
    pub measures: bool,
    /// Adds router load records (layer × expert) to each row's measure job.
    pub routing: bool,
    /// Written to `targets.json` when not empty.
    pub targets: Vec<Target>,
    /// Appends the records of an interrupted job (no `job_done`): 0.999 accuracy that must
    /// never be reported.
    pub interrupted_job: bool,
    /// Writes measures without `higher_is_better`, as run directories of older versions did.
    pub legacy_measures: bool,
}

impl Synthetic {
    /// Three rows of one model (dense and two compressed variants), two tasks and a
    /// perplexity task, measures, routing and a target; 200 documents per task.
    pub fn example() -> Self {
        let row = |method: &str, accuracy: f64, scale: f64, tps: f64| {
            RowSpec::scaled("smol", method, accuracy, scale, tps)
        };
        Self {
            suite: "synthetic".into(),
            start_time: "2026-01-01T00:00:00Z".into(),
            rows: vec![
                row("dense", 0.62, 1.0, 40.0),
                row("moe-top2", 0.58, 0.45, 70.0),
                row("pruned-50", 0.49, 0.5, 60.0),
            ],
            tasks: vec!["arc_easy".into(), "piqa".into()],
            perplexity: true,
            docs: 200,
            measures: true,
            routing: true,
            targets: vec![Target {
                model: "smol".into(),
                method: "dense".into(),
                task: Some("arc_easy".into()),
                metric: "acc,none".into(),
                value: 0.6,
                tolerance: 0.05,
                source: Some("a synthetic paper, Table 1".into()),
            }],
            interrupted_job: true,
            legacy_measures: false,
        }
    }

    /// A compression study over two base models of very different sizes: an MoE whose experts
    /// are pruned and merged at two compression ratios, and a small dense model upcycled,
    /// layer-pruned and converted; 300 documents per task, no target.
    pub fn study() -> Self {
        let moe = |method: &str, accuracy: f64, kept: f64| RowSpec {
            // 1.3B active of 6.9B total; pruning experts lowers the total, not the active.
            params_total: 6.9e9 * (0.19 + 0.81 * kept),
            params_active: 1.3e9,
            flops_per_token: 2.6e9,
            bytes_per_decode_token: 2.0 * 1.3e9 * (0.9 + 0.1 * kept),
            decode_tokens_per_s_b1: 18.0 + 4.0 * (1.0 - kept),
            peak_rss_mib: 14_000.0 * (0.19 + 0.81 * kept),
            ..RowSpec::scaled("olmoe-1b-7b", method, accuracy, 1.0, 0.0)
        };
        let small = |method: &str, accuracy: f64, scale: f64, tps: f64| {
            RowSpec::scaled("smollm2-135m", method, accuracy, scale, tps)
        };
        Self {
            suite: "compression-study".into(),
            start_time: "2026-02-01T00:00:00Z".into(),
            rows: vec![
                moe("dense", 0.71, 1.0),
                moe("reap[compression=0.25]", 0.70, 0.75),
                moe("reap[compression=0.5]", 0.66, 0.5),
                moe("freq_prune[compression=0.25]", 0.68, 0.75),
                moe("freq_prune[compression=0.5]", 0.6, 0.5),
                moe("ream[compression=0.25]", 0.705, 0.75),
                moe("ream[compression=0.5]", 0.675, 0.5),
                moe("hc_smoe[compression=0.5]", 0.64, 0.5),
                small("dense", 0.52, 1.0, 60.0),
                RowSpec {
                    params_active: 135e6 * 1.6,
                    flops_per_token: 270e6 * 1.6,
                    ..small("upcycle-8x2", 0.52, 4.0, 38.0)
                },
                small("layer-prune-span3", 0.47, 0.9, 66.0),
                RowSpec {
                    params_active: 135e6 * 0.93,
                    flops_per_token: 270e6 * 0.93,
                    ..small("dense2moe-span3", 0.495, 1.0, 58.0)
                },
            ],
            tasks: vec!["arc_easy".into(), "piqa".into(), "hellaswag".into()],
            perplexity: true,
            docs: 300,
            measures: true,
            routing: false,
            targets: Vec::new(),
            interrupted_job: false,
            legacy_measures: false,
        }
    }

    /// A nightly leaderboard at scale: `models` base models × `methods` methods × `tasks`
    /// multiple-choice tasks of `docs` documents, with measures; accuracies and costs spread
    /// deterministically. `8 × 100 × 40` writes about 100k records.
    pub fn scale(models: usize, methods: usize, tasks: usize, docs: usize) -> Self {
        let rows = (0..models)
            .flat_map(|m| {
                (0..methods).map(move |k| {
                    let model = format!("model-{m}");
                    let method = if k == 0 {
                        "dense".to_owned()
                    } else {
                        format!("method-{k}")
                    };
                    let u = uniform(&[&model, &method]);
                    let scale = if k == 0 { 1.0 } else { 0.3 + 0.7 * u };
                    let accuracy = 0.45 + 0.25 * scale - 0.05 * uniform(&[&method]);
                    RowSpec::scaled(
                        &model,
                        &method,
                        accuracy,
                        scale * (1.0 + m as f64),
                        40.0 / scale,
                    )
                })
            })
            .collect();
        Self {
            suite: "scale".into(),
            start_time: "2026-03-01T00:00:00Z".into(),
            rows,
            tasks: (0..tasks).map(|t| format!("task_{t}")).collect(),
            perplexity: false,
            docs,
            measures: true,
            routing: false,
            targets: Vec::new(),
            interrupted_job: false,
            legacy_measures: false,
        }
    }

    /// Writes the run directory `dir` (created, or resumed when it holds the same suite).
    pub fn write(&self, dir: &Path) -> Result<(), SuiteError> {
        let info = RunInfo {
            suite: self.suite.clone(),
            suite_path: format!("/synthetic/{}.yaml", self.suite).into(),
            suite_sha256: format!("{:064x}", mix(&[&self.suite])),
            harness_version: HARNESS_VERSION.into(),
            start_time: self.start_time.clone(),
        };
        let store = RunStore::open(dir, &info)?;
        for row in &self.rows {
            for task in &self.tasks {
                self.write_choice_task(&store, row, task)?;
            }
            if self.perplexity {
                self.write_perplexity_task(&store, row)?;
            }
            if self.measures {
                self.write_measures(&store, row)?;
            }
        }
        if !self.targets.is_empty() {
            let text = serde_json::to_string_pretty(&self.targets).expect("targets serialize");
            moebench_suite::write_atomic(&dir.join(crate::run::TARGETS_FILE), text.as_bytes())?;
        }
        if self.interrupted_job {
            let row = &self.rows[0];
            let task = self.tasks[0].clone();
            let r = Record {
                kind: RecordKind::Metric,
                metric: "acc,none".into(),
                value: 0.999,
                ..self.template(row, Some(task), "interrupted")
            };
            append_lines(dir, &[serde_json::to_value(r).expect("records serialize")])?;
        }
        Ok(())
    }

    fn template(&self, row: &RowSpec, task: Option<String>, job: &str) -> Record {
        Record {
            kind: RecordKind::Metric,
            suite: self.suite.clone(),
            job: job.to_owned(),
            model: format!("synthetic/{}", row.model),
            model_label: row.model.clone(),
            model_sha: format!("{:040x}", mix(&[&row.model])),
            method: row.method_name().to_owned(),
            method_label: row.method.clone(),
            method_params: json!({}),
            method_hash: format!("{:016x}", mix(&[&row.method])),
            task_hash: task.as_ref().map(|t| format!("{:016x}", mix(&[t]))),
            task,
            metric: String::new(),
            value: 0.0,
            stderr: None,
            n: None,
            higher_is_better: None,
            protocol: None,
            device: "cpu".into(),
            dtype: "float32".into(),
            batch_size: 8,
            seed: 1234,
            harness_version: HARNESS_VERSION.into(),
            wall_s: 12.5,
            time: self.start_time.clone(),
        }
    }

    fn job(row: &RowSpec, task: &str) -> String {
        format!("{:016x}", mix(&[&row.model, &row.method, task]))
    }

    fn write_choice_task(
        &self,
        store: &RunStore,
        row: &RowSpec,
        task: &str,
    ) -> Result<(), SuiteError> {
        let job = Self::job(row, task);
        let draws: Vec<f64> = (0..self.docs)
            .map(|i| uniform(&[&row.model, task, &i.to_string()]))
            .collect();
        let acc = outcomes(&draws, row.accuracy, row.noise);
        let acc_norm = outcomes(&draws, row.accuracy + 0.03, row.noise);
        let samples: Vec<Value> = (0..self.docs)
            .map(|i| {
                json!({
                    "doc_id": i,
                    "doc_hash": format!("{:016x}", mix(&[task, &i.to_string()])),
                    "metrics": {"acc,none": acc[i], "acc_norm,none": acc_norm[i]},
                })
            })
            .collect();
        store.write_samples(&job, &samples)?;
        let measurements = [
            accuracy("acc,none", &acc),
            accuracy("acc_norm,none", &acc_norm),
        ];
        store.commit(
            &self.template(row, Some(task.to_owned()), &job),
            RecordKind::Metric,
            &measurements,
            12.5,
        )
    }

    fn write_perplexity_task(&self, store: &RunStore, row: &RowSpec) -> Result<(), SuiteError> {
        let job = Self::job(row, "wikitext");
        let samples: Vec<Value> = (0..self.docs.min(20))
            .map(|i| {
                json!({
                    "doc_id": i,
                    "doc_hash": format!("{:016x}", mix(&["wikitext", &i.to_string()])),
                    "metrics": {"word_perplexity,none": [-250.0, 90]},
                })
            })
            .collect();
        store.write_samples(&job, &samples)?;
        let measurement = Measurement {
            metric: "word_perplexity,none".into(),
            value: 18.0 + 40.0 * (1.0 - row.accuracy),
            stderr: Some(0.4),
            n: Some(samples.len() as u64),
            higher_is_better: Some(false),
            protocol: Some("lm_eval_rolling(max_length=2048,context_len=1)".into()),
        };
        store.commit(
            &self.template(row, Some("wikitext".into()), &job),
            RecordKind::Metric,
            &[measurement],
            30.0,
        )
    }

    fn write_measures(&self, store: &RunStore, row: &RowSpec) -> Result<(), SuiteError> {
        let job = Self::job(row, "");
        // Directions as `moebench run` records them.
        let measure = |metric: &str, value: f64, higher: bool| Measurement {
            metric: metric.into(),
            value,
            stderr: None,
            n: None,
            higher_is_better: (!self.legacy_measures).then_some(higher),
            protocol: None,
        };
        let measurements = [
            measure("params_total", row.params_total, false),
            measure("params_active", row.params_active, false),
            measure("flops_per_token", row.flops_per_token, false),
            measure("bytes_per_decode_token", row.bytes_per_decode_token, false),
            measure("decode_tokens_per_s_b1", row.decode_tokens_per_s_b1, true),
            measure("tpot_ms_b1", 1000.0 / row.decode_tokens_per_s_b1, false),
            measure("peak_rss_mib", row.peak_rss_mib, false),
        ];
        if self.routing {
            let layers = (0..4)
                .map(|layer| LayerLoads {
                    layer,
                    coactivation: Vec::new(),
                    loads: (0..8)
                        .map(|e| {
                            (1000.0 * uniform(&[&row.method, &layer.to_string(), &e.to_string()]))
                                .round()
                        })
                        .collect(),
                })
                .collect();
            store.write_routing(&RoutingLog {
                job: job.clone(),
                model_label: row.model.clone(),
                method_label: row.method.clone(),
                layers,
            })?;
        }
        store.commit(
            &self.template(row, None, &job),
            RecordKind::Measure,
            &measurements,
            5.0,
        )?;
        Ok(())
    }
}

/// 0/1 scores: a draw below `accuracy` is correct; then `noise` flips (see [`RowSpec::noise`]).
fn outcomes(draws: &[f64], accuracy: f64, noise: usize) -> Vec<f64> {
    let mut scores: Vec<f64> = draws.iter().map(|u| f64::from(*u < accuracy)).collect();
    let (mut down, mut up) = (noise, noise.saturating_sub(1));
    for s in &mut scores {
        if *s == 1.0 && down > 0 {
            (*s, down) = (0.0, down - 1);
        } else if *s == 0.0 && up > 0 {
            (*s, up) = (1.0, up - 1);
        }
    }
    scores
}

/// An accuracy measurement of 0/1 scores with lm-eval's `mean_stderr`.
fn accuracy(metric: &str, scores: &[f64]) -> Measurement {
    Measurement {
        metric: metric.into(),
        value: moebench_core::stats::mean(scores),
        stderr: moebench_core::stats::mean_stderr(scores),
        n: Some(scores.len() as u64),
        higher_is_better: Some(true),
        protocol: None,
    }
}

fn append_lines(dir: &Path, lines: &[Value]) -> Result<(), SuiteError> {
    let path = dir.join(moebench_suite::store::RECORDS_FILE);
    let write = |source| SuiteError::Write {
        path: path.clone(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .map_err(write)?;
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    file.write_all(text.as_bytes()).map_err(write)
}

/// FNV-1a over the parts, finished with splitmix64.
fn mix(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in parts.join("\u{1f}").bytes() {
        h = (h ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// A deterministic draw in [0, 1).
fn uniform(parts: &[&str]) -> f64 {
    (mix(parts) >> 11) as f64 / (1u64 << 53) as f64
}
