use std::path::PathBuf;

/// Every error of the report crate: what failed and on which file.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Store(#[from] moebench_suite::SuiteError),
    #[error("{0}: no run.json; is this a run directory written by `moebench run`?")]
    NotARun(PathBuf),
    #[error("{0}: no finished job in records.jsonl; nothing to report")]
    Empty(PathBuf),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write {path}: {source}")]
    Csv {
        path: PathBuf,
        #[source]
        source: csv::Error,
    },
    #[error(
        "{base} and {new} share no metric (same model label, method label, task and metric): \
         nothing to compare; compare two runs of the same suite"
    )]
    NothingInCommon { base: PathBuf, new: PathBuf },
    #[error("quality `{asked}` is not a number of this run; use one of: {known}")]
    UnknownQuality { asked: String, known: String },
    #[error("aggregating the records: {0}")]
    Polars(#[from] polars::error::PolarsError),
    #[error("rendering the report template: {0:#}")]
    Template(#[from] minijinja::Error),
    #[error("paired bootstrap: {0}")]
    Stats(#[from] moebench_core::CoreError),
}

impl ReportError {
    pub(crate) fn read(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| Self::Read {
            path: path.to_owned(),
            source,
        }
    }
}
