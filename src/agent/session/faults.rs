//! Injected faults: which control message the `malformed` fault breaks and how, and where in a
//! reply the `drop` and `stall` faults hit.

use tokio_tungstenite::tungstenite::Message;

use super::super::wire::Output;
use super::{End, Session, send};

/// Control messages the `malformed` fault can break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Slot {
    Transcript,
    ResponseStart,
    ResponseEnd,
}

impl Session {
    /// Emit a control output, or its broken form when the `malformed` fault hit this slot.
    pub(super) fn emit_control(
        &mut self,
        output: Output<'_>,
        slot: Slot,
        corrupt: Option<Slot>,
    ) -> Result<(), End> {
        let mut msgs = self.wire.encode(output);
        if corrupt == Some(slot) {
            match msgs.iter_mut().find(|m| m.is_text()) {
                Some(msg) => *msg = corrupted(msg),
                // This protocol has no message here (Twilio): send a broken one anyway.
                None => msgs.insert(0, Message::text("{\"event\":\"mark\",\"mark\":{")),
            }
        }
        for msg in msgs {
            send(&self.out, msg)?;
        }
        Ok(())
    }
}

/// The broken form of a text message for the `malformed` fault: any proper prefix of a JSON
/// object is invalid JSON.
fn corrupted(msg: &Message) -> Message {
    let text = match msg {
        Message::Text(t) => t.as_str(),
        _ => "{\"type\":\"\"}",
    };
    let half: String = text.chars().take(text.chars().count() / 2).collect();
    Message::text(half)
}

/// A frame index in the middle of a reply (between a quarter and three quarters), at least 1
/// so some audio precedes the fault. `u` is uniform in [0, 1).
pub(super) fn mid_reply(u: f64, frames: u64) -> u64 {
    if frames < 2 {
        return frames;
    }
    let lo = (frames / 4).max(1);
    let hi = (frames * 3 / 4).clamp(lo + 1, frames);
    lo + ((u * (hi - lo) as f64) as u64).min(hi - lo - 1)
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn mid_reply_stays_inside() {
        for frames in 0..200 {
            for u in [0.0, 0.3, 0.5, 0.999_999] {
                let k = mid_reply(u, frames);
                if frames >= 2 {
                    assert!(k >= 1 && k < frames, "frames {frames} u {u} -> {k}");
                } else {
                    assert_eq!(k, frames);
                }
            }
        }
    }

    #[test]
    fn corrupted_control_is_not_json() {
        for text in [
            r#"{"type":"response_start"}"#,
            r#"{"type":"transcript","text":"héllo wörld"}"#,
            r#"{"event":"mark","streamSid":"MZ1","mark":{"name":"response_end"}}"#,
        ] {
            let Message::Text(t) = corrupted(&Message::text(text)) else {
                panic!("text expected");
            };
            assert!(!t.is_empty());
            assert!(serde_json::from_str::<Value>(&t).is_err(), "{t}");
        }
    }
}
