//! Why a report could not be read, built or written.

use std::path::PathBuf;

use crate::contract::hist::HistError;

/// A report-layer failure. The texts are what users read (and tests check): keep them.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create {}: {source}", path.display())]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A JSON file that does not parse.
    #[error("{}: {source}", path.display())]
    JsonFile {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// A report value that does not (de)serialize, by output name (`metrics.json`).
    #[error("{name}: {source}")]
    Json {
        name: &'static str,
        source: serde_json::Error,
    },
    /// A run folder without the file asked for.
    #[error("{} has no {name}", dir.display())]
    Missing { dir: PathBuf, name: String },
    #[error("template output name `{0}` must be a plain file name like `custom.md`")]
    TemplateName(String),
    #[error("cannot read template {}: {source}", path.display())]
    ReadTemplate {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A template that does not parse or render (`message` is minijinja's, with its details).
    #[error("template {name}: {message}")]
    Template { name: String, message: String },
    #[error("{0}")]
    Csv(String),
    /// A file that stopped taking writes midway (`message`: the writer's error).
    #[error("cannot write {}: {message}", path.display())]
    WriteFailed { path: PathBuf, message: String },
    #[error("{}: expected a run folder or a metrics*.json file", .0.display())]
    NotARun(PathBuf),
    /// Another error, about the file at `path`.
    #[error("{}: {source}", path.display())]
    InFile {
        path: PathBuf,
        source: Box<ReportError>,
    },
    #[error("junit.xml: {0}")]
    Junit(String),
    /// A stored histogram that cannot be read (`what`: which one, e.g. "histogram `ttfa`").
    #[error("{}: {what}: {source}", dir.display())]
    Histogram {
        dir: PathBuf,
        what: String,
        source: HistError,
    },
    /// Folders that are not shards of one run, or cannot be merged.
    #[error("{0}")]
    Merge(String),
    #[error("the timeline writer stopped unexpectedly")]
    TimelineWriter,
}

impl ReportError {
    pub(crate) fn csv(e: impl std::fmt::Display) -> Self {
        ReportError::Csv(e.to_string())
    }
}
