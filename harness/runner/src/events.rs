//! Progress of a run, reported to whoever drives it (the CLI's progress bars, a test's log).
use std::path::Path;

/// What the runner is doing. Borrowed strings: a sink that keeps them copies them.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// The run starts: jobs in the plan, finished by an earlier run, skipped, and to run.
    Started {
        jobs: usize,
        done_earlier: usize,
        skipped: usize,
        to_run: usize,
        run_dir: &'a Path,
    },
    /// A job that cannot run here (e.g. a model without a tokenizer), with the reason.
    Skipped {
        job: &'a str,
        reason: &'a str,
    },
    /// A job an earlier run finished.
    DoneEarlier {
        job: &'a str,
    },
    /// A step that is not a job: loading a model and applying its method, building a model.
    StepStarted {
        what: &'a str,
    },
    StepFinished {
        what: &'a str,
        seconds: f64,
    },
    /// A model the suite builds was trained.
    Built {
        model: &'a str,
        seconds: f64,
        heldout_nll: Option<f64>,
        dir: &'a Path,
    },
    JobStarted {
        job: &'a str,
    },
    JobFinished {
        job: &'a str,
        seconds: f64,
    },
    /// A job (or every job of a model × method whose set-up failed) failed; the run goes on.
    JobFailed {
        job: &'a str,
        error: &'a str,
    },
}

/// Receives the run's events.
pub trait RunEvents {
    fn event(&self, event: Event<'_>);
}

/// Ignores every event.
pub struct Silent;

impl RunEvents for Silent {
    fn event(&self, _: Event<'_>) {}
}
