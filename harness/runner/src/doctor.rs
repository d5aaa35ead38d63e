//! `moebench doctor`: what this machine gives moebench — libtorch and its devices, the Hub
//! cache, the shipped data, the code sandbox — each as one check with what to do when it is
//! missing. Read-only: nothing is downloaded or written.
use crate::paths::{data_roots, default_calibration_text, task_dirs, DATA_DIR_VAR};
use moebench_hub::{resolve, HubConfig, ModelRef};
use moebench_sandbox::SandboxError;
use moebench_tasks::code::{CodeExecutionConfig, CodeExecutor};
use serde::Serialize;
use std::path::PathBuf;

/// The embedded real model (`moebench prepare` puts it in the cache).
const EMBEDDED_MODEL: &str = "HuggingFaceTB/SmolLM2-135M-Instruct";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Works, with a limitation worth knowing.
    Warn,
    /// Missing: some commands will fail until it is fixed.
    Missing,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    /// What was found, or what is missing and how to fix it.
    pub detail: String,
}

fn check(name: &'static str, status: Status, detail: impl Into<String>) -> Check {
    Check {
        name,
        status,
        detail: detail.into(),
    }
}

/// Every check, in the order a user fixes things.
pub fn diagnose(hub: &HubConfig) -> Vec<Check> {
    vec![
        libtorch(),
        cuda(),
        cpu_bf16(),
        hub_cache(hub),
        embedded_model(hub),
        shipped_data(),
        calibration_text(),
        code_sandbox(),
    ]
}

/// The libtorch this process loaded (from /proc/self/maps: the real one, whatever the
/// RUNPATH or LD_LIBRARY_PATH said).
fn libtorch() -> Check {
    let loaded = std::fs::read_to_string("/proc/self/maps")
        .ok()
        .and_then(|maps| {
            maps.lines()
                .filter_map(|l| l.split_whitespace().nth(5))
                .find(|p| p.contains("libtorch_cpu"))
                .map(|p| {
                    PathBuf::from(p)
                        .parent()
                        .map(PathBuf::from)
                        .unwrap_or_default()
                })
        });
    let threads = tch::get_num_threads();
    match loaded {
        Some(dir) => check(
            "libtorch",
            Status::Ok,
            format!(
                "{} ({threads} intra-op threads, MKL {}, OpenMP {})",
                dir.display(),
                yes_no(tch::utils::has_mkl()),
                yes_no(tch::utils::has_openmp())
            ),
        ),
        None => check(
            "libtorch",
            Status::Warn,
            format!("loaded, location unknown (no /proc/self/maps); {threads} intra-op threads"),
        ),
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn cuda() -> Check {
    match tch::Cuda::device_count() {
        0 => check(
            "cuda",
            Status::Warn,
            "no CUDA device: suites with `device: auto` run on the CPU, `device: cuda` is refused before any job",
        ),
        n => check(
            "cuda",
            Status::Ok,
            format!(
                "{n} device(s), cuDNN {}",
                yes_no(tch::Cuda::cudnn_is_available())
            ),
        ),
    }
}

/// `--dtype bf16` on the CPU is fast only with native bf16 instructions.
fn cpu_bf16() -> Check {
    let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let native: Vec<&str> = ["avx512_bf16", "amx_bf16"]
        .into_iter()
        .filter(|f| flags.split_whitespace().any(|w| w == *f))
        .collect();
    match native.is_empty() {
        false => check(
            "cpu bf16",
            Status::Ok,
            format!("native ({})", native.join(", ")),
        ),
        true => check(
            "cpu bf16",
            Status::Warn,
            "no avx512_bf16/amx_bf16: --dtype bf16 on the CPU is emulated (slower than f32)",
        ),
    }
}

fn hub_cache(hub: &HubConfig) -> Check {
    let mode = match hub.offline {
        true => "offline (HF_HUB_OFFLINE)",
        false => "online",
    };
    match hub.cache_dir.is_dir() {
        true => check(
            "hub cache",
            Status::Ok,
            format!("{} ({mode}, endpoint {})", hub.cache_dir.display(), hub.endpoint),
        ),
        false => check(
            "hub cache",
            Status::Warn,
            format!(
                "{} does not exist yet ({mode}); it is created on the first download (set HF_HUB_CACHE or HF_HOME to move it)",
                hub.cache_dir.display()
            ),
        ),
    }
}

fn embedded_model(hub: &HubConfig) -> Check {
    let offline = HubConfig {
        offline: true,
        ..hub.clone()
    };
    let model: ModelRef = EMBEDDED_MODEL.parse().expect("a valid model id");
    match resolve(&offline, &model, &["config.json"], &[]) {
        Ok(repo) => check(
            "embedded model",
            Status::Ok,
            format!("{EMBEDDED_MODEL} at {}", repo.dir.display()),
        ),
        Err(_) => check(
            "embedded model",
            Status::Missing,
            format!(
                "{EMBEDDED_MODEL} is not in the cache: run `moebench prepare` (after `make deps`)"
            ),
        ),
    }
}

fn shipped_data() -> Check {
    let roots = data_roots();
    let tasks: usize = task_dirs(&[]).iter().map(|d| count_yaml(d)).sum();
    match tasks {
        0 => check(
            "shipped tasks",
            Status::Missing,
            format!(
                "no suites/tasks found (looked under {}); set {DATA_DIR_VAR} to a directory holding moebench's suites/tasks and .deps",
                describe(&roots)
            ),
        ),
        n => check(
            "shipped tasks",
            Status::Ok,
            format!("{n} task files under {}", describe(&roots)),
        ),
    }
}

fn describe(roots: &[PathBuf]) -> String {
    match roots.is_empty() {
        true => "the working directory".into(),
        false => roots
            .iter()
            .map(|r| r.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    }
}

fn count_yaml(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .map(|p| match p.is_dir() {
                    true => count_yaml(&p),
                    false => usize::from(p.extension().is_some_and(|e| e == "yaml")),
                })
                .sum()
        })
        .unwrap_or(0)
}

fn calibration_text() -> Check {
    let text = default_calibration_text();
    match text.is_file() {
        true => check("calibration text", Status::Ok, text.display().to_string()),
        false => check(
            "calibration text",
            Status::Warn,
            format!(
                "the default {} is missing (run `make deps`); suites that set calibration.source do not need it",
                text.display()
            ),
        ),
    }
}

/// Whether code tasks (HumanEval, MBPP) can run isolated here.
fn code_sandbox() -> Check {
    match CodeExecutor::new(&CodeExecutionConfig::default()) {
        Ok(executor) => check(
            "code sandbox",
            Status::Ok,
            format!("namespaces available; generated code runs with {}", executor.interpreter().display()),
        ),
        Err(SandboxError::Unavailable(why)) => check(
            "code sandbox",
            Status::Warn,
            format!("no namespace isolation here ({why}); code tasks need `allow_unisolated` / --allow-unisolated-code"),
        ),
        Err(e) => check("code sandbox", Status::Missing, e.to_string()),
    }
}
