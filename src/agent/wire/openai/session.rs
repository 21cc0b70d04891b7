//! `session.update`: the client's turn detection and input rate, in the GA or the beta shape.

use serde_json::{Map, Value, json};

use super::super::{Input, REALTIME_RATE};
use super::OpenAi;

impl OpenAi {
    /// `session.update`: turn detection and input rate (GA or beta shape); answers
    /// `session.updated` with the whole session, or an `error` and changes nothing.
    pub(super) fn session_update(&mut self, value: &Value, idle: bool) -> Vec<Input> {
        let Some(patch) = value.get("session").filter(|s| s.is_object()) else {
            return vec![Input::Reply(self.error(
                "missing_session",
                "session.update without a `session` object",
            ))];
        };
        let turn_detection = patch
            .pointer("/audio/input/turn_detection")
            .or_else(|| patch.get("turn_detection"));
        let manual = turn_detection.map(Value::is_null);
        let rate = match input_rate(patch) {
            Ok(rate) => rate,
            Err(message) => return vec![Input::Reply(self.error("invalid_value", message))],
        };
        if let Some(rate) = rate
            && rate != self.rate
            && !idle
        {
            let e = self.error(
                "session_busy",
                "the audio rate cannot change while a turn is under way",
            );
            return vec![Input::Reply(e)];
        }

        let mut inputs = Vec::new();
        merge(&mut self.session, patch);
        if let Some(td) = turn_detection {
            // Canonical GA place, whichever shape the client used.
            set_path(
                &mut self.session,
                &["audio", "input", "turn_detection"],
                td.clone(),
            );
        }
        if let Some(manual) = manual
            && manual != self.manual
        {
            self.manual = manual;
            inputs.push(Input::ManualTurns(manual));
        }
        if let Some(rate) = rate {
            for dir in ["input", "output"] {
                let format = json!({"type": "audio/pcm", "rate": rate});
                set_path(&mut self.session, &["audio", dir, "format"], format);
            }
            if rate != self.rate {
                self.rate = rate;
                inputs.push(Input::Rate(rate));
            }
        }
        let session = self.session.clone();
        inputs.push(Input::Reply(
            self.event(json!({"type": "session.updated", "session": session})),
        ));
        inputs
    }
}

/// The input rate a `session.update` asks for, if any.
fn input_rate(patch: &Value) -> Result<Option<u32>, String> {
    if let Some(format) = patch.pointer("/audio/input/format") {
        let kind = format.get("type").and_then(Value::as_str);
        if kind.is_some_and(|k| k != "audio/pcm") {
            return Err(format!(
                "the reference agent only speaks audio/pcm (PCM16), not {}",
                kind.unwrap_or_default()
            ));
        }
        return match format.get("rate") {
            None => Ok(Some(REALTIME_RATE)),
            Some(rate) => match rate.as_u64() {
                Some(r @ 1..=384_000) => Ok(u32::try_from(r).ok()),
                _ => Err(format!(
                    "audio.input.format.rate must be 1..=384000, found {rate}"
                )),
            },
        };
    }
    match patch.get("input_audio_format").map(|f| f.as_str()) {
        None => Ok(None),
        Some(Some("pcm16")) => Ok(Some(REALTIME_RATE)),
        Some(other) => Err(format!(
            "the reference agent only speaks input_audio_format pcm16, not {}",
            other.unwrap_or("a non-string")
        )),
    }
}

/// JSON merge: objects merge key by key, anything else replaces.
pub(super) fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (t, p) => *t = p.clone(),
    }
}

pub(super) fn set_path(target: &mut Value, path: &[&str], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        *target = value;
        return;
    };
    let mut at = target;
    for key in parents {
        if !at.is_object() {
            *at = Value::Object(Map::new());
        }
        let Value::Object(map) = at else { return };
        at = map.entry((*key).to_string()).or_insert(Value::Null);
    }
    if !at.is_object() {
        *at = Value::Object(Map::new());
    }
    if let Value::Object(map) = at {
        map.insert((*last).to_string(), value);
    }
}
