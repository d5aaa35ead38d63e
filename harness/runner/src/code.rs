//! Running model-generated code (lm-eval's `unsafe_code: true` tasks: HumanEval, MBPP) in the
//! sandbox: refused without the user's confirmation, set up once before any model time is
//! spent, shared by every task that needs it.
use crate::error::{Result, RunnerError};
use moebench_sandbox::{Isolation, SandboxError};
use moebench_tasks::code::{CodeExecutionConfig, CodeExecutor};
use moebench_tasks::Task;
use std::ffi::OsString;
use std::sync::Arc;

/// What the user allowed (the suite's `code_execution`, or `moebench eval`'s flags).
#[derive(Debug, Clone)]
pub struct CodePolicy {
    pub confirmed: bool,
    pub python: OsString,
    pub allow_unisolated: bool,
}

/// The first task that executes generated code while the user has not confirmed it, as an
/// error naming the task and the switch (`how_to_confirm`) that allows it.
pub fn check_confirmed<'a>(
    policy: &CodePolicy,
    mut executing: impl Iterator<Item = &'a str>,
    how_to_confirm: &str,
) -> Result<()> {
    match (policy.confirmed, executing.next()) {
        (false, Some(task)) => Err(RunnerError::Invalid(format!(
            "task `{task}` executes model-generated code (`unsafe_code: true`); {how_to_confirm} to run it in moebench's sandbox"
        ))),
        _ => Ok(()),
    }
}

/// Gives every task that executes code one sandboxed executor. Returns a warning when the
/// code runs without namespace isolation (`allow_unisolated` and the OS forbids namespaces).
pub fn enable_code_execution(
    tasks: &mut [&mut Task],
    policy: &CodePolicy,
) -> Result<Option<String>> {
    if !tasks.iter().any(|t| t.executes_code()) {
        return Ok(None);
    }
    let mut config = CodeExecutionConfig {
        python: policy.python.clone(),
        ..CodeExecutionConfig::default()
    };
    let mut warning = None;
    let executor = match CodeExecutor::new(&config) {
        Err(SandboxError::Unavailable(why)) if policy.allow_unisolated => {
            warning = Some(format!(
                "generated code runs WITHOUT namespace isolation (network and filesystem reachable): {why}"
            ));
            config.isolation = Isolation::LimitsOnly;
            CodeExecutor::new(&config)
        }
        other => other,
    }?;
    let executor = Arc::new(executor);
    for task in tasks.iter_mut().filter(|t| t.executes_code()) {
        task.allow_code_execution(executor.clone());
    }
    Ok(warning)
}
