//! Reports: the JSON result is the contract ([`crate::contract::RunReport`], `metrics.json`);
//! with the timeline and resource samples (`run.json`, [`RunData`]) it is the context every
//! other output is rendered from — Markdown and HTML templates, `timeline.csv`, `junit.xml`,
//! the console summary — at the end of a run or later by `planrun report`.
//!
//! - [`build`]: the contract from a run's summary and verdicts;
//! - [`files`]: a report folder read back and written;
//! - [`templates`]: the minijinja environment and template context;
//! - [`console`]: the console summary;
//! - the other modules render one format each, or compare, merge and sweep reports.

pub mod arrivals;
pub mod build;
pub mod charts;
pub mod compare;
pub mod console;
pub mod error;
pub mod files;
mod html;
pub mod junit;
pub mod merge;
pub mod snippet;
pub mod sweep;
pub mod templates;
pub mod timeline;

pub use crate::contract::hist;
pub use crate::contract::{
    FailureSample, GeneratorHealth, HttpThroughput, MetricReport, ReportView, RunEnvironment,
    RunInfo, RunReport,
};
pub use build::shard_finished;
pub use console::{console_health, console_summary, console_summary_color};
pub use error::ReportError;
pub use files::{
    Outputs, RunFiles, default_out_dir, output_name, saved_runs, write, write_atomic, write_outputs,
};
pub use templates::{
    BUILTIN_TEMPLATES, check_template, load_templates, render_template, render_with,
    template_context,
};
pub use timeline::RunData;
