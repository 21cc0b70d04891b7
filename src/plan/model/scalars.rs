//! Scalar wrappers: values written as text and parsed while deserializing, so a bad value is
//! reported by the format's own parser at its exact line and column.

use std::borrow::Cow;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use crate::distribution::{Dist, format_duration, parse_duration};

/// A duration written as text: `250ms`, `1.5s`, `2m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text).map(Dur).map_err(de::Error::custom)
    }
}

impl Serialize for Dur {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(self.0))
    }
}

impl JsonSchema for Dur {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A duration: a number and a unit (us, ms, s, m, h), e.g. `250ms`, `1.5s`.",
            "pattern": r"^\s*[0-9]+(\.[0-9]+)?\s*(us|µs|ms|s|m|min|h)\s*$",
            "examples": ["250ms", "1.5s"]
        })
    }
}

/// A duration that may be random: `500ms`, `300ms..800ms`, `normal(500ms, 50ms)`,
/// `exponential(200ms)`, `lognormal(400ms, 0.3)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Jitter(pub Dist);

impl<'de> Deserialize<'de> for Jitter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse::<Dist>().map(Jitter).map_err(de::Error::custom)
    }
}

impl Serialize for Jitter {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

impl JsonSchema for Jitter {
    fn schema_name() -> Cow<'static, str> {
        "Jitter".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A fixed or random duration: `500ms`, a uniform range `300ms..800ms`, \
                `normal(mean, sd)`, `exponential(mean)` or `lognormal(median, sigma)`. \
                Drawn from the run's seeded RNG.",
            "examples": ["500ms", "300ms..800ms", "normal(500ms, 50ms)", "exponential(200ms)", "lognormal(400ms, 0.3)"]
        })
    }
}

// ---------------------------------------------------------------------------------------------
