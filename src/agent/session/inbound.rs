//! What the client says: decoded inputs (audio, explicit speech events, Realtime commands)
//! applied to the state machine.

use std::time::Duration;

use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::super::vad::{Ear, EarEvent, Heard};
use super::super::wire::{CancelReason, Input, Output};
use super::{Barge, End, Phase, Session, Stage, send};

impl Session {
    pub(super) fn on_message(&mut self, msg: Message, now: Instant) -> Result<(), End> {
        match msg {
            Message::Close(_) => Err(End::ClientGone),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Ok(()),
            msg => {
                let idle = self.idle();
                for input in self.wire.decode(&msg, idle) {
                    self.on_input(input, now)?;
                }
                Ok(())
            }
        }
    }

    pub(super) fn on_input(&mut self, input: Input, now: Instant) -> Result<(), End> {
        match input {
            Input::Audio(samples) => self.on_audio(&samples, now),
            Input::SpeechStart => {
                if self.ear.speech_start(now) {
                    self.on_speech_started(now, self.audio_in)?;
                }
                self.check_min_speech(now)
            }
            Input::Interrupt => {
                if self.ear.speech_start(now) {
                    self.on_speech_started(now, self.audio_in)?;
                }
                self.on_real_speech(now)
            }
            Input::SpeechEnd(hint) => self.on_speech_end_message(hint, now),
            Input::CreateResponse => self.on_create_response(now),
            Input::ToolResult => {
                if let Phase::Thinking { turn, stage, .. } = &mut self.phase
                    && *stage == Stage::ToolWait
                {
                    turn.tool_answered = true;
                }
                Ok(())
            }
            Input::Cancel => self.on_cancel(now),
            Input::ClearBuffer => self.drop_utterance(now),
            Input::ManualTurns(manual) => {
                self.manual = manual;
                if manual {
                    // The VAD stops deciding: an utterance it was hearing is dropped.
                    self.drop_utterance(now)?;
                }
                Ok(())
            }
            Input::Rate(rate) => {
                // The codec only changes the rate while idle: nothing in flight is resampled.
                let c = &self.shared.config;
                self.rate = rate;
                self.voice = self.shared.voice(rate);
                self.ear = Ear::new(rate, c.vad_threshold_dbfs, c.vad_hangover);
                Ok(())
            }
            Input::Reply(msg) => send(&self.out, msg),
            Input::MarkPlayed(name) => {
                // Twilio echoes the reply's mark once the caller has played all of it.
                if let Phase::Speaking { reply, .. } = &self.phase
                    && reply.end_sent
                    && name == "response_end"
                {
                    self.phase = Phase::Idle;
                }
                Ok(())
            }
            Input::Hangup => Err(End::Hangup),
            Input::Violation(code, reason) => Err(End::Violation(code, reason)),
        }
    }

    pub(super) fn on_audio(&mut self, samples: &[i16], now: Instant) -> Result<(), End> {
        let window = self.ear.window();
        for block in samples.chunks(window) {
            let block_start = self.audio_in;
            self.audio_in += Duration::from_secs_f64(block.len() as f64 / f64::from(self.rate));
            if self.manual {
                // Manual turns: no VAD, the audio only counts towards the next commit.
                self.ear.unanalysed(block.len() as u64);
                continue;
            }
            match self.ear.audio(block, now) {
                EarEvent::Nothing => {}
                EarEvent::Started => self.on_speech_started(now, block_start)?,
                EarEvent::Ended(heard) => self.on_vad_ended(heard, now)?,
            }
            self.check_min_speech(now)?;
        }
        Ok(())
    }

    /// Raw `speech_end` / Realtime `input_audio_buffer.commit`.
    pub(super) fn on_speech_end_message(
        &mut self,
        hint: Option<String>,
        now: Instant,
    ) -> Result<(), End> {
        if self.manual {
            let heard = self.ear.take_idle(hint);
            if matches!(self.phase, Phase::Idle) {
                // ASR starts now; the reply waits for `response.create`.
                return self.start_turn(heard, now, true, false);
            }
            self.committed = Some(heard);
            return self.emit(Output::Committed);
        }
        if self.ear.is_open() {
            match self.ear.speech_end(hint) {
                Some(heard) => self.on_speech_ended(heard, now),
                None => Ok(()),
            }
        } else if matches!(self.phase, Phase::Idle) {
            // A bare speech_end: the audio since the last utterance was the utterance
            // (e.g. too quiet for the VAD).
            let heard = self.ear.take_idle(hint);
            self.start_turn(heard, now, true, true)
        } else {
            // The VAD already ended this utterance and its turn is under way.
            Ok(())
        }
    }

    /// Realtime `response.create`.
    pub(super) fn on_create_response(&mut self, now: Instant) -> Result<(), End> {
        if let Phase::Speaking { reply, .. } = &self.phase
            && reply.end_sent
        {
            // Its `response.done` is out (sent ahead): only the caller's playout is left.
            self.phase = Phase::Idle;
        }
        if let Phase::Thinking { turn, stage, until } = &mut self.phase
            && *stage == Stage::ToolWait
        {
            if !turn.tool_answered {
                return self.emit(Output::Error {
                    code: "tool_result_missing",
                    message: "response.create before the function_call_output of the pending \
                              tool call"
                        .into(),
                });
            }
            // The tool result is in: the LLM answers with it.
            *stage = Stage::Generate;
            *until = now + turn.llm + turn.tts;
            return Ok(());
        }
        match &mut self.phase {
            Phase::Idle => {
                // Answer what was committed while busy, else the conversation so far.
                let heard = self.committed.take().unwrap_or(Heard {
                    audio: Duration::ZERO,
                    text: None,
                });
                self.start_turn(heard, now, false, true)
            }
            Phase::Thinking { turn, stage, .. } if !turn.go => {
                turn.go = true;
                if *stage == Stage::Hold {
                    self.begin_response(now)?;
                }
                Ok(())
            }
            _ => self.emit(Output::Error {
                code: "conversation_already_has_active_response",
                message: "a response is already in progress".into(),
            }),
        }
    }

    /// Realtime `response.cancel`: stop the reply now.
    pub(super) fn on_cancel(&mut self, now: Instant) -> Result<(), End> {
        let active = match &self.phase {
            Phase::Idle => false,
            Phase::Thinking { turn, .. } => turn.go,
            Phase::Speaking { .. } => true,
        };
        if !active {
            return self.emit(Output::Error {
                code: "response_cancel_not_active",
                message: "there is no response in progress to cancel".into(),
            });
        }
        if let Some(barge) = self.barge.as_mut() {
            // Speech the agent is hearing becomes the next turn when it ends.
            barge.real = true;
        }
        self.cancel_reply(CancelReason::Client, now)
    }

    /// Realtime `input_audio_buffer.clear` (or a switch to manual turns): forget the open
    /// utterance and any audio not yet committed. A pending barge-in ends with it.
    pub(super) fn drop_utterance(&mut self, now: Instant) -> Result<(), End> {
        self.ear.clear();
        match self.barge.take() {
            Some(Barge { real: false }) => {
                self.false_alarm(now);
                Ok(())
            }
            Some(Barge { real: true }) if matches!(self.phase, Phase::Speaking { .. }) => {
                self.cancel_reply(CancelReason::TurnDetected, now)
            }
            _ => Ok(()),
        }
    }
}
