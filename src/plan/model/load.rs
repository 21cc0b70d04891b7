//! `load`: how many callers, for how long: the closed model (users, iterations, stages) and
//! the open model (arrival rate and stages).

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Deserialize;
use serde::de::{self, Deserializer};

use super::{Dur, Jitter};
use crate::protocol::OneOrMany;

/// The load shape.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Load {
    /// Concurrent virtual users, or a sweep `[5, 8, 10]` that runs the plan once per count.
    /// Default 1 (closed model; not with `arrival_rate` or `stages`).
    #[serde(default)]
    pub users: Option<OneOrMany<u32>>,
    /// Iterations (calls) per user. Ignored when `duration` is set unless both are given,
    /// in which case a user stops at whichever comes first.
    pub iterations: Option<u32>,
    /// Run for this long (users start new iterations until it elapses).
    pub duration: Option<Dur>,
    /// Users start evenly spread over this period.
    #[serde(default, alias = "ramp")]
    pub ramp_up: Option<Dur>,
    /// Pause between a user's iterations.
    pub think_time: Option<Jitter>,
    /// Seed of every random choice (scenario, jitter). Same seed, same sequence.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Open model: new callers per second or minute (`5/s`, `300/m`); each caller makes one
    /// call. Runs for `duration`, or through `arrival_stages` starting at this rate.
    #[serde(default)]
    pub arrival_rate: Option<Rate>,
    /// Open model: the rate changes linearly (`{to: 10/s, over: 30s}`) or holds (`{hold: 60s}`),
    /// stage after stage, from `arrival_rate` (or 0). The run lasts as long as the stages.
    #[serde(default)]
    pub arrival_stages: Option<Vec<RateStage>>,
    /// Open model: arrival spacing, `uniform` (default: deterministic, evenly by the rate) or
    /// `poisson` (a Poisson process drawn from `seed`).
    #[serde(default)]
    pub arrivals: Option<ArrivalPattern>,
    /// Open model: at most this many callers at once (default 1000). An arrival finding the cap
    /// reached is dropped and counted, never delayed.
    #[serde(default)]
    pub max_users: Option<u32>,
    /// Closed model with ramping stages: the target user count changes linearly
    /// (`{to: 50, over: 60s}`) or holds (`{hold: 120s}`), from 0. Users start as it rises and
    /// finish their call, then leave, as it falls. The run lasts as long as the stages.
    #[serde(default)]
    pub stages: Option<Vec<UserStage>>,
}

/// Arrivals per unit of time: `5/s`, `300/m`, `0.5/s`, `7200/h`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Arrivals per second.
    pub per_second: f64,
}

/// Why a rate did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    #[error("`{0}` is not a rate: write e.g. `5/s` or `300/m`")]
    NoSlash(String),
    #[error("`{text}` is not a rate: `{number}` is not a number")]
    NotANumber { text: String, number: String },
    #[error("`{text}`: unknown rate unit `{unit}` (use `/s`, `/m` or `/h`)")]
    UnknownUnit { text: String, unit: String },
    #[error("`{0}` is not a finite rate")]
    NotFinite(String),
}

impl Rate {
    /// Arrivals per second of `5/s`, `300/m`, `7200/h`.
    pub fn parse(text: &str) -> Result<f64, RateError> {
        let t = text.trim();
        let (num, unit) = t
            .split_once('/')
            .ok_or_else(|| RateError::NoSlash(t.to_string()))?;
        let n: f64 = num.trim().parse().map_err(|_| RateError::NotANumber {
            text: t.to_string(),
            number: num.trim().to_string(),
        })?;
        let per = match unit.trim() {
            "s" | "sec" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            u => {
                return Err(RateError::UnknownUnit {
                    text: t.to_string(),
                    unit: u.to_string(),
                });
            }
        };
        if !n.is_finite() {
            return Err(RateError::NotFinite(t.to_string()));
        }
        Ok(n / per)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Rate::parse(&text)
            .map(|per_second| Rate { per_second })
            .map_err(de::Error::custom)
    }
}

impl JsonSchema for Rate {
    fn schema_name() -> Cow<'static, str> {
        "Rate".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "Arrivals per second, minute or hour: `5/s`, `300/m`, `0.5/s`.",
            "pattern": r"^\s*[0-9]+(\.[0-9]+)?\s*/\s*(s|sec|m|min|h)\s*$",
            "examples": ["5/s", "300/m"]
        })
    }
}

/// Arrival spacing of the open model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ArrivalPattern {
    /// Deterministic, evenly spaced by the rate.
    Uniform,
    /// A Poisson process, drawn from the plan seed.
    Poisson,
}

/// One stage of `arrival_stages`: `{to: 10/s, over: 30s}` or `{hold: 60s}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateStage {
    /// The rate at the end of the stage (reached linearly).
    pub to: Option<Rate>,
    /// How long the change takes (default 0: a jump).
    pub over: Option<Dur>,
    /// Keep the current rate this long.
    pub hold: Option<Dur>,
}

/// One stage of `stages`: `{to: 50, over: 60s}` or `{hold: 120s}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserStage {
    /// The user count at the end of the stage (reached linearly).
    pub to: Option<u32>,
    /// How long the change takes (default 0: a jump).
    pub over: Option<Dur>,
    /// Keep the current count this long.
    pub hold: Option<Dur>,
}

/// The closed model's user counts (`users`, default 1).
pub fn default_users() -> OneOrMany<u32> {
    OneOrMany(vec![1])
}
fn default_seed() -> u64 {
    1
}

impl Default for Load {
    fn default() -> Self {
        Load {
            users: None,
            iterations: None,
            duration: None,
            ramp_up: None,
            think_time: None,
            seed: default_seed(),
            arrival_rate: None,
            arrival_stages: None,
            arrivals: None,
            max_users: None,
            stages: None,
        }
    }
}
