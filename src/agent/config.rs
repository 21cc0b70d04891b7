//! What the reference agent does: its latencies, turn-taking settings and injected faults
//! ([`AgentConfig`], [`Faults`]), and the check that they make sense.

use std::time::Duration;

use super::AgentError;
use super::http::HttpAgentConfig;
use crate::distribution::Dist;

/// Behaviour of the reference agent. Every latency is a [`Dist`], drawn per turn from a
/// per-connection RNG seeded from (`seed`, connection number).
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// Sample rate of incoming and reply audio (PCM16 LE mono).
    pub sample_rate: u32,
    /// Reply frame size.
    pub frame: Duration,
    /// End of speech → transcript.
    pub asr_latency: Dist,
    /// Transcript (or tool result) → first token.
    pub llm_latency: Dist,
    /// First token → first audio byte.
    pub tts_latency: Dist,
    /// Reply audio after the leading silence.
    pub reply_duration: Dist,
    /// Digital silence at the start of every reply, before the tone.
    pub leading_silence: Duration,
    /// How fast reply audio is sent: real time, all at once, or a fixed lead.
    pub reply_pacing: ReplyPacing,
    /// Pause between the sentences of a reply ([`SENTENCE`] of tone each): a gap in sending
    /// when pacing in real time, digital silence inside the audio otherwise.
    pub sentence_pause: Duration,
    /// User speech detected during a reply → audio stops.
    pub barge_in_delay: Dist,
    /// End of a false alarm → `resumed` and the audio continues.
    pub resume_delay: Dist,
    /// Speech shorter than this during a reply is a false alarm.
    pub min_speech: Duration,
    /// Energy VAD threshold per 20 ms window of incoming audio.
    pub vad_threshold_dbfs: f64,
    /// Non-speech after speech before the VAD declares the end of speech.
    pub vad_hangover: Duration,
    /// A `speech_end` text containing one of these calls a tool before answering.
    pub tool_keywords: Vec<String>,
    /// Additional random fraction of turns that call a tool.
    pub tool_fraction: f64,
    /// How long a tool call takes.
    pub tool_latency: Dist,
    /// (OpenAI Realtime) after a tool call, close the response and wait for the caller's
    /// `function_call_output` (with the call's `call_id`) and `response.create`, as the real
    /// API does (default). Off: answer `tool_latency` after the call without it.
    pub wait_for_tool_result: bool,
    /// Send `{"type":"metrics",…}` once per turn after the first reply frame.
    pub send_metrics: bool,
    /// Injected failures.
    pub faults: Faults,
    /// Base seed; connection `n` uses a stream derived from (`seed`, `n`).
    pub seed: u64,
    /// The HTTP side (`POST /chunks`, for `protocol: http_chunks`).
    pub http: HttpAgentConfig,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            sample_rate: 16_000,
            frame: Duration::from_millis(20),
            asr_latency: Dist::from_millis(50),
            llm_latency: Dist::from_millis(150),
            tts_latency: Dist::from_millis(100),
            reply_duration: Dist::from_millis(1500),
            leading_silence: Duration::ZERO,
            reply_pacing: ReplyPacing::Realtime,
            sentence_pause: Duration::ZERO,
            barge_in_delay: Dist::from_millis(50),
            resume_delay: Dist::from_millis(100),
            min_speech: Duration::from_millis(400),
            vad_threshold_dbfs: -40.0,
            vad_hangover: Duration::from_millis(400),
            tool_keywords: vec!["book".to_string()],
            tool_fraction: 0.0,
            tool_latency: Dist::from_millis(500),
            wait_for_tool_result: true,
            send_metrics: true,
            faults: Faults::default(),
            seed: 0,
            http: HttpAgentConfig::default(),
        }
    }
}

impl AgentConfig {
    /// Reject settings the agent cannot run with.
    pub fn validate(&self) -> Result<(), AgentError> {
        if !(1..=384_000).contains(&self.sample_rate) {
            return Err(AgentError::SampleRate(self.sample_rate));
        }
        if self.frame < Duration::from_millis(1) || self.frame > Duration::from_secs(1) {
            return Err(AgentError::Frame(self.frame));
        }
        if let ReplyPacing::Ahead(lead) = self.reply_pacing
            && lead > MAX_AHEAD
        {
            return Err(AgentError::Ahead(lead));
        }
        if self.sentence_pause > MAX_SENTENCE_PAUSE {
            return Err(AgentError::SentencePause(self.sentence_pause));
        }
        if !self.vad_threshold_dbfs.is_finite() {
            return Err(AgentError::VadThreshold);
        }
        for (name, p) in [
            ("tool_fraction", self.tool_fraction),
            ("faults.drop", self.faults.drop),
            ("faults.stall", self.faults.stall),
            ("faults.malformed", self.faults.malformed),
            ("http.http_error", self.http.http_error),
            ("http.non_json", self.http.non_json),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(AgentError::Probability { name, value: p });
            }
        }
        Ok(())
    }
}

/// Speech per sentence of a reply: `sentence_pause` goes between consecutive sentences.
pub const SENTENCE: Duration = Duration::from_millis(1500);
/// Largest `ahead(N)` lead accepted.
const MAX_AHEAD: Duration = Duration::from_secs(60);
/// Largest `sentence_pause` accepted.
const MAX_SENTENCE_PAUSE: Duration = Duration::from_secs(10);

/// How the agent sends a reply's audio. Whatever the pacing, the caller plays it in real time
/// from the reply's start; the agent models that playout to know what the caller has heard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReplyPacing {
    /// Each frame when it is due to play (the default): nothing is ever queued at the caller.
    #[default]
    Realtime,
    /// The whole reply as fast as the socket takes it, as OpenAI Realtime, ElevenLabs or
    /// Cartesia streams do.
    Burst,
    /// Keep this much audio queued ahead of the caller's playout.
    Ahead(Duration),
}

impl ReplyPacing {
    /// `realtime`, `burst` or `ahead(500ms)`.
    pub fn name(self) -> String {
        match self {
            ReplyPacing::Realtime => "realtime".into(),
            ReplyPacing::Burst => "burst".into(),
            ReplyPacing::Ahead(d) => format!("ahead({}ms)", d.as_millis()),
        }
    }
}

/// Per-turn fault probabilities.
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    /// Close the TCP connection abruptly (no close frame) mid-reply.
    pub drop: f64,
    /// Pause the reply audio for `stall_for` mid-reply.
    pub stall: f64,
    pub stall_for: Duration,
    /// Send one control message as invalid JSON.
    pub malformed: f64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            drop: 0.0,
            stall: 0.0,
            stall_for: Duration::from_secs(2),
            malformed: 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_messages_are_stable() {
        let err = |c: AgentConfig| c.validate().unwrap_err().to_string();
        assert_eq!(
            err(AgentConfig {
                sample_rate: 0,
                ..AgentConfig::default()
            }),
            "agent sample_rate must be 1..=384000 Hz, found 0"
        );
        assert_eq!(
            err(AgentConfig {
                frame: Duration::from_secs(2),
                ..AgentConfig::default()
            }),
            "agent frame must be between 1ms and 1s, found 2s"
        );
        assert_eq!(
            err(AgentConfig {
                vad_threshold_dbfs: f64::NAN,
                ..AgentConfig::default()
            }),
            "agent vad_threshold_dbfs must be a finite number"
        );
        assert_eq!(
            err(AgentConfig {
                faults: Faults {
                    drop: 1.5,
                    ..Faults::default()
                },
                ..AgentConfig::default()
            }),
            "agent faults.drop must be a probability in 0..=1, found 1.5"
        );
        assert!(AgentConfig::default().validate().is_ok());
    }
}
