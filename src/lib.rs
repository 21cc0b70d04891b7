//! planrun: a declarative load tester for real-time voice agents.
//!
//! Data flows one way: `plan` → `engine` (with `audio`, `protocol`) → `metrics` →
//! `thresholds` → `report`. The `agent` module is the built-in reference voice agent.

pub mod agent;
pub mod audio;
pub mod bench;
pub mod cli;
pub mod contract;
pub mod distribution;
pub mod engine;
pub mod judge;
pub mod metrics;
pub mod plan;
pub mod protocol;
pub mod redact;
pub mod report;
pub mod resources;
pub mod runner;
pub mod shard;
pub mod slug;
pub mod stats;
