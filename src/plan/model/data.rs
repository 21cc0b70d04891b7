//! `data:`: per-caller data. Each virtual user gets a row of a CSV or JSON-lines file (or, in
//! the audio-dataset form, each call a clip of a folder of WAVs), used in plan strings as
//! `{{ row.COLUMN }}`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `data: { file: callers.csv, pick: sequential }` or `data: { audio_dir: clips/, order: shuffle }`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    /// A CSV file with a header line (`.csv`) or JSON lines, one object per line (`.jsonl`,
    /// `.ndjson`), relative to the plan's folder. Each row's fields are `{{ row.COLUMN }}`.
    pub file: Option<String>,
    /// (`file`) how users get rows: `sequential` (default; user *n* gets row *n* modulo the
    /// rows), `random` (a seeded draw per user) or `unique` (user *n* gets row *n*; a plan
    /// error when there are fewer rows than users).
    pub pick: Option<Pick>,
    /// The audio-dataset form: a folder of WAVs (`clip.wav` with an optional `clip.txt`
    /// transcript beside it). Each call plays the next clip: `{{ row.audio }}` is its path,
    /// `{{ row.name }}` its file stem, `{{ row.transcript }}` its text (empty when absent).
    pub audio_dir: Option<String>,
    /// (`audio_dir`) the clips' order for each user: `sequential` (default; user *n* starts
    /// at clip *n* and goes on in name order) or `shuffle` (a seeded shuffle per user).
    pub order: Option<Order>,
}

/// How users get rows of a data file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Pick {
    #[default]
    Sequential,
    Random,
    Unique,
}

/// The order a user plays an audio dataset's clips in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    #[default]
    Sequential,
    Shuffle,
}
