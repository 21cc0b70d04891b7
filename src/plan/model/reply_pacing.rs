//! `target.agent.reply_pacing`: how the built-in agent sends its reply audio.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use crate::distribution::{format_duration, parse_duration};

/// `realtime` (each frame when it is due to play), `burst` (the whole reply as fast as the
/// socket takes it) or `ahead(500ms)` (keep that much queued ahead of the caller's playout).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReplyPacing {
    #[default]
    Realtime,
    Burst,
    Ahead(Duration),
}

impl FromStr for ReplyPacing {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let t = text.trim();
        match t {
            "realtime" => return Ok(ReplyPacing::Realtime),
            "burst" => return Ok(ReplyPacing::Burst),
            _ => {}
        }
        let inner = t
            .strip_prefix("ahead")
            .map(str::trim_start)
            .and_then(|r| r.strip_prefix('('))
            .and_then(|r| r.strip_suffix(')'));
        match inner {
            Some(d) => parse_duration(d)
                .map(ReplyPacing::Ahead)
                .map_err(|e| format!("reply_pacing `{t}`: {e}")),
            None => Err(format!(
                "reply_pacing must be `realtime`, `burst` or `ahead(DURATION)` (e.g. \
                 `ahead(500ms)`), found `{t}`"
            )),
        }
    }
}

impl fmt::Display for ReplyPacing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplyPacing::Realtime => f.write_str("realtime"),
            ReplyPacing::Burst => f.write_str("burst"),
            ReplyPacing::Ahead(d) => write!(f, "ahead({})", format_duration(*d)),
        }
    }
}

impl<'de> Deserialize<'de> for ReplyPacing {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(de::Error::custom)
    }
}

impl Serialize for ReplyPacing {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl JsonSchema for ReplyPacing {
    fn schema_name() -> Cow<'static, str> {
        "ReplyPacing".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "How the built-in agent sends reply audio: `realtime` (each frame when \
                it is due to play; the default), `burst` (the whole reply as fast as the socket \
                takes it) or `ahead(DURATION)` (keep that much audio queued ahead of the \
                caller's playout).",
            "pattern": r"^\s*(realtime|burst|ahead\s*\(\s*[0-9]+(\.[0-9]+)?\s*(us|µs|ms|s|m|min|h)\s*\))\s*$",
            "examples": ["realtime", "burst", "ahead(500ms)"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        assert_eq!("realtime".parse(), Ok(ReplyPacing::Realtime));
        assert_eq!(" burst ".parse(), Ok(ReplyPacing::Burst));
        let ahead: ReplyPacing = "ahead(500ms)".parse().unwrap();
        assert_eq!(ahead, ReplyPacing::Ahead(Duration::from_millis(500)));
        assert_eq!(ahead.to_string().parse(), Ok(ahead));
        assert_eq!(
            "ahead (1.5s)".parse(),
            Ok(ReplyPacing::Ahead(Duration::from_millis(1500)))
        );
        assert!("ahead(fast)".parse::<ReplyPacing>().is_err());
        let err = "bursty".parse::<ReplyPacing>().unwrap_err();
        assert!(
            err.contains("`realtime`, `burst` or `ahead(DURATION)`"),
            "{err}"
        );
    }
}
