//! `target.playout`: the caller's playout buffer, from which every audio assertion and metric
//! reads what the caller *hears* (see docs/reports-and-thresholds.md, "The heard timeline").

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use super::Dur;

/// Default pre-roll: what a client player buffers before (re)starting playback. WebRTC's NetEQ
/// and browser players run a jitter buffer of a few tens of ms; Twilio's media path buffers
/// about the same. 60 ms is also `target.jitter_buffer`'s long-standing default.
pub const DEFAULT_PLAYOUT_BUFFER: Duration = Duration::from_millis(60);

/// Default heard pause in the bot's speech that counts as "stopped": longer than the pauses
/// TTS puts between sentences and clauses (typically 200–450 ms) and within the 500–800 ms
/// that voice pipelines themselves wait before deciding a speaker has finished (Pipecat's VAD
/// `stop_secs` 0.8 s, LiveKit's `min_endpointing_delay` 0.5 s).
pub const DEFAULT_STOP_GAP: Duration = Duration::from_millis(600);

/// The caller's playout buffer (`target.playout`).
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlayoutSpec {
    /// Pre-roll: playback of reply audio starts this long after it arrives when nothing is
    /// queued (at the start of a reply and after an underrun); later audio queues behind it.
    /// Default: `target.jitter_buffer` (60ms).
    pub buffer: Option<Dur>,
    /// A pause in the heard speech (nothing left to play, or only audio below
    /// `speech_threshold_dbfs`) longer than this means the bot stopped talking; shorter pauses
    /// (between sentences) do not. A flush message from the server is a stop at once.
    /// Default 600ms.
    pub stop_gap: Option<Dur>,
}

/// `target.playout`, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Playout {
    pub buffer: Duration,
    pub stop_gap: Duration,
}

impl Default for Playout {
    fn default() -> Self {
        Playout {
            buffer: DEFAULT_PLAYOUT_BUFFER,
            stop_gap: DEFAULT_STOP_GAP,
        }
    }
}

impl PlayoutSpec {
    /// The settings, with `jitter_buffer` (the older spelling of `buffer`) as the fallback.
    pub fn resolve(&self, jitter_buffer: Duration) -> Playout {
        Playout {
            buffer: self.buffer.map_or(jitter_buffer, |d| d.0),
            stop_gap: self.stop_gap.map_or(DEFAULT_STOP_GAP, |d| d.0),
        }
    }
}
