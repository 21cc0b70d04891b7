//! The built-in agent's protocol adapters (Twilio Media Streams, OpenAI Realtime, and the raw
//! protocol on every other path), driven over real WebSockets by small test clients that speak
//! each protocol's public message shapes.
//!
//! One module per protocol ([`twilio`], [`realtime`]), the raw protocol and faults in
//! [`every_protocol`], and the shared test client in [`support`].

mod every_protocol;
mod realtime;
mod support;
mod twilio;
