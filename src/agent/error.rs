//! The reference agent's errors: settings it cannot run with, and failures to start or serve.

use std::time::Duration;

/// Why the reference agent cannot run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("agent sample_rate must be 1..=384000 Hz, found {0}")]
    SampleRate(u32),
    #[error("agent frame must be between 1ms and 1s, found {0:?}")]
    Frame(Duration),
    #[error("agent reply_pacing ahead(N) must be at most 60s, found {0:?}")]
    Ahead(Duration),
    #[error("agent sentence_pause must be at most 10s, found {0:?}")]
    SentencePause(Duration),
    #[error("agent vad_threshold_dbfs must be a finite number")]
    VadThreshold,
    /// A probability setting (`tool_fraction`, `faults.*`, `http.*`) outside 0..=1.
    #[error("agent {name} must be a probability in 0..=1, found {value}")]
    Probability { name: &'static str, value: f64 },
    /// [`super::serve_forever`] could not bind or start. The I/O error is part of the message
    /// (not a `source`), so printing the error alone shows the whole story.
    #[error("cannot start the reference agent on {listen}: {error}")]
    Start {
        listen: String,
        error: std::io::Error,
    },
    /// [`super::serve_forever`] could not install its Ctrl-C handler.
    #[error("cannot listen for Ctrl-C: {0}")]
    CtrlC(std::io::Error),
}
