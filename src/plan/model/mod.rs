//! The plan's typed model: the single source of truth for YAML, TOML and the JSON Schema.
//!
//! Scalar forms that need parsing (durations, jitter, threshold expressions) are parsed during
//! deserialization, so a bad value is reported by the format's own parser at its exact
//! line and column.

mod data;
mod generator;
mod load;
mod playout;
mod reply_pacing;
mod scalars;
mod scenario;
mod target;
mod tools;
mod vars;
mod webrtc;

pub use data::*;
pub use generator::*;
pub use load::*;
pub use playout::*;
pub use reply_pacing::ReplyPacing;
pub use scalars::*;
pub use scenario::*;
pub use target::*;
pub use tools::*;
pub use vars::*;
pub use webrtc::{WebrtcSpec, validate_webrtc};

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::threshold_expr::ThresholdExpr;
use crate::protocol::OneOrMany;

/// A planrun plan: who to call, how many callers, what they say, and what counts as passing.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// JSON Schema reference for editors (ignored).
    #[serde(default, rename = "$schema")]
    pub schema: Option<String>,
    /// The plan's name; names the report folder.
    pub name: String,
    /// Free text shown in reports.
    #[serde(default)]
    pub description: Option<String>,
    /// The voice agent under test.
    pub target: Target,
    /// How many virtual users, for how long.
    #[serde(default)]
    pub load: Load,
    /// Weighted scenarios; each iteration of a user picks one.
    pub scenarios: Vec<Scenario>,
    /// Pass/fail criteria: a metric name (or `success_rate`) mapped to one expression or a list.
    #[serde(default)]
    pub thresholds: BTreeMap<String, OneOrMany<ThresholdExpr>>,
    /// Report outputs.
    #[serde(default)]
    pub report: ReportSpec,
    /// The load generator's own limits (`on_overload`).
    #[serde(default)]
    pub generator: GeneratorSpec,
    /// Values used in any plan string as `{{ vars.NAME }}` (values may use `{{ env.NAME }}`).
    #[serde(default)]
    pub vars: Vars,
    /// Named step lists, used in scenarios as `- use: NAME`.
    #[serde(default)]
    pub fragments: Fragments,
    /// Files (`vars:` and `fragments:` only) shared across plans, relative to this plan.
    #[serde(default)]
    pub include: Includes,
    /// Per-caller data: a row of a CSV/JSON-lines file per user, or a folder of WAVs.
    #[serde(default)]
    pub data: Option<DataSpec>,
}

/// Report settings.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportSpec {
    /// Output formats written to the report folder.
    #[serde(default = "default_formats")]
    pub formats: Vec<ReportFormat>,
    /// Parent folder of report folders (default `reports`).
    #[serde(default)]
    pub dir: Option<String>,
    /// Templates that replace a built-in report of the same output name (`summary.md`,
    /// `report.html`) or add a new output: output file name → template path (relative to the
    /// plan's folder). Names ending in `.html`/`.xml` are HTML-escaped automatically.
    #[serde(default)]
    pub templates: BTreeMap<String, String>,
    /// Save what each caller heard as a WAV in the report's `audio/` folder (reply audio placed
    /// where the caller heard it, so pauses, stalls and cut-offs are audible): `none` (default), `failed` (only
    /// failed iterations) or `all`.
    #[serde(default)]
    pub record_audio: RecordAudio,
}

impl Default for ReportSpec {
    fn default() -> Self {
        ReportSpec {
            formats: default_formats(),
            dir: None,
            templates: BTreeMap::new(),
            record_audio: RecordAudio::None,
        }
    }
}

/// Which iterations' received audio is saved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RecordAudio {
    #[default]
    None,
    Failed,
    All,
}

fn default_formats() -> Vec<ReportFormat> {
    ReportFormat::ALL.to_vec()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReportFormat {
    /// `summary.md`
    Md,
    /// `metrics.json` (with the HDR histograms) and `run.json` (timeline and resource samples)
    Json,
    /// `report.html`: one self-contained page with charts
    Html,
    /// `timeline.csv`: one row per event
    Csv,
    /// `junit.xml`: one test case per threshold and per scenario
    Junit,
}

impl ReportFormat {
    /// Every format, in the order they are written.
    pub const ALL: [ReportFormat; 5] = [
        ReportFormat::Md,
        ReportFormat::Json,
        ReportFormat::Html,
        ReportFormat::Csv,
        ReportFormat::Junit,
    ];
}
