//! The agent's turn: every draw for it made up front (so a seed replays it), then ASR, the
//! optional tool call, and LLM + TTS up to the first reply audio.

use std::sync::Arc;
use std::time::Duration;

use rand::RngExt;
use serde_json::json;
use tokio::time::Instant;

use super::super::ReplyPacing;
use super::super::vad::Heard;
use super::super::voice::Reply;
use super::super::wire::Output;
use super::faults::{Slot, mid_reply};
use super::{End, Phase, Session, Stage, Turn};

impl Session {
    /// Start the agent's turn for `heard`. `commit`: the utterance becomes a conversation item
    /// now (Realtime `committed`); `go`: the reply may follow without `response.create`.
    pub(super) fn start_turn(
        &mut self,
        heard: Heard,
        now: Instant,
        commit: bool,
        go: bool,
    ) -> Result<(), End> {
        if commit {
            self.emit(Output::Committed)?;
        }
        let shared = Arc::clone(&self.shared);
        let c = &shared.config;
        let rng = &mut self.rng;
        self.turns += 1;
        // Fixed draw order: a seed replays every turn.
        let asr = c.asr_latency.sample(rng);
        let llm = c.llm_latency.sample(rng);
        let tts = c.tts_latency.sample(rng);
        let tool_latency = c.tool_latency.sample(rng);
        let tool_roll: f64 = rng.random_range(0.0..1.0);
        let reply_duration = c.reply_duration.sample(rng);
        let drop_roll: f64 = rng.random_range(0.0..1.0);
        let stall_roll: f64 = rng.random_range(0.0..1.0);
        let malformed_roll: f64 = rng.random_range(0.0..1.0);
        let drop_pos: f64 = rng.random_range(0.0..1.0);
        let stall_pos: f64 = rng.random_range(0.0..1.0);
        let slot = match rng.random_range(0..3u8) {
            0 => Slot::Transcript,
            1 => Slot::ResponseStart,
            _ => Slot::ResponseEnd,
        };

        let keyword = heard.text.as_deref().is_some_and(|text| {
            let text = text.to_lowercase();
            c.tool_keywords
                .iter()
                .any(|k| !k.is_empty() && text.contains(&k.to_lowercase()))
        });
        let tool = (keyword || tool_roll < c.tool_fraction).then_some(tool_latency);
        // Sentence pauses: a gap in sending at real-time pacing, silence in the audio otherwise.
        let realtime = c.reply_pacing == ReplyPacing::Realtime;
        let pause = if realtime {
            Duration::ZERO
        } else {
            c.sentence_pause
        };
        let audio = self.voice.reply(c.leading_silence, reply_duration, pause);
        let transcript = match heard.text {
            Some(text) if !text.trim().is_empty() => text,
            _ => format!("user utterance ({} ms of audio)", heard.audio.as_millis()),
        };
        let turn = Turn {
            index: self.turns,
            speech_ended: now,
            transcript,
            asr,
            llm,
            tts,
            tool,
            tool_answered: false,
            go,
            audio,
            drop_at: (drop_roll < c.faults.drop).then(|| mid_reply(drop_pos, audio.frames)),
            stall_at: (stall_roll < c.faults.stall).then(|| mid_reply(stall_pos, audio.frames)),
            corrupt: (malformed_roll < c.faults.malformed).then_some(slot),
        };
        self.phase = Phase::Thinking {
            turn: Box::new(turn),
            stage: Stage::Asr,
            until: now + asr,
        };
        Ok(())
    }

    /// A thinking stage finished at its scheduled time `due` (the next stage counts from
    /// there, so timer lateness does not add up).
    pub(super) fn on_stage(&mut self, due: Instant) -> Result<(), End> {
        let strict = self.strict_tools();
        let Phase::Thinking { turn, stage, .. } = &mut self.phase else {
            return Ok(());
        };
        match *stage {
            Stage::Asr => {
                let (transcript, corrupt, go) = (turn.transcript.clone(), turn.corrupt, turn.go);
                if !go {
                    *stage = Stage::Hold;
                }
                self.emit_control(Output::Transcript(&transcript), Slot::Transcript, corrupt)?;
                if go {
                    self.begin_response(due)?;
                }
                Ok(())
            }
            Stage::Hold => Ok(()),
            Stage::ToolWait => {
                self.phase = Phase::Idle;
                self.emit(Output::Error {
                    code: "tool_result_timeout",
                    message: format!(
                        "no function_call_output and response.create for the tool call within {} s",
                        super::TOOL_RESULT_TIMEOUT.as_secs()
                    ),
                })
            }
            Stage::Tool if strict => {
                // As the real API: the response ends with the call, and the agent waits for
                // the caller's result.
                *stage = Stage::ToolWait;
                let arguments = json!({ "query": turn.transcript }).to_string();
                if let Phase::Thinking { until, .. } = &mut self.phase {
                    *until = due + super::TOOL_RESULT_TIMEOUT;
                }
                self.emit(Output::ToolCall {
                    name: "lookup",
                    arguments,
                    awaits_result: true,
                })
            }
            Stage::Tool => {
                *stage = Stage::Generate;
                if let Phase::Thinking { turn, until, .. } = &mut self.phase {
                    *until = due + turn.llm + turn.tts;
                }
                Ok(())
            }
            Stage::Generate => {
                let corrupt = turn.corrupt;
                let duration = Duration::from_secs_f64(
                    turn.audio.total as f64 / f64::from(self.voice.sample_rate()),
                );
                let c = &self.shared.config;
                let gap = if c.reply_pacing == ReplyPacing::Realtime {
                    c.sentence_pause
                } else {
                    Duration::ZERO
                };
                let mut reply = Reply::start(turn.audio, due, gap);
                if self.barge.is_some() {
                    // The user is already talking over the start of the answer.
                    let delay = self.shared.config.barge_in_delay.sample(&mut self.rng);
                    reply.stop_at = Some(due + delay);
                }
                let old = std::mem::replace(&mut self.phase, Phase::Idle);
                if let Phase::Thinking { turn, .. } = old {
                    self.phase = Phase::Speaking { turn, reply };
                }
                self.emit_control(
                    Output::ResponseStart { duration },
                    Slot::ResponseStart,
                    corrupt,
                )
            }
        }
    }

    /// Tool calls wait for the caller's result (OpenAI Realtime, `wait_for_tool_result`).
    pub(super) fn strict_tools(&self) -> bool {
        self.shared.config.wait_for_tool_result && self.wire.has_tool_results()
    }

    /// The transcript is out and the reply may run: call the tool if the turn has one, then
    /// generate (from `at`).
    pub(super) fn begin_response(&mut self, at: Instant) -> Result<(), End> {
        let strict = self.strict_tools();
        let Phase::Thinking { turn, stage, until } = &mut self.phase else {
            return Ok(());
        };
        match turn.tool {
            Some(tool) => {
                *stage = Stage::Tool;
                *until = at + tool;
                if strict {
                    // The model takes `tool_latency` to make the call (see `Stage::Tool`).
                    return Ok(());
                }
                let arguments = json!({ "query": turn.transcript }).to_string();
                self.emit(Output::ToolCall {
                    name: "lookup",
                    arguments,
                    awaits_result: false,
                })
            }
            None => {
                *stage = Stage::Generate;
                *until = at + turn.llm + turn.tts;
                Ok(())
            }
        }
    }
}
