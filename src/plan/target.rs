//! Compiling the target's wire settings: protocol adapter, connection options (headers, query,
//! subprotocols, TLS) with `{{ env.NAME }}` interpolation, and the custom mapping.

use std::collections::BTreeMap;
use std::sync::Arc;

use rustls::ClientConfig;

use super::LoadedPlan;
use super::diag::{Diagnostic, Seg};
use super::model::{OpenAiSpec, ProtocolKind, Target};
use crate::plan_path;
use crate::protocol::custom::{CustomProtocol, Preset};
use crate::protocol::openai::TurnDetection;
use crate::redact::{interpolate_env, register};

/// How a call talks to the target, ready to run.
#[derive(Debug, Clone, Default)]
pub struct WireSpec {
    pub protocol: ProtocolKind,
    /// The built-in agent's endpoint for this protocol.
    pub builtin_path: String,
    pub headers: Vec<(String, String)>,
    pub query: Vec<(String, String)>,
    pub subprotocols: Vec<String>,
    /// Set when the plan asks for a CA file or `insecure`; otherwise the default roots.
    pub tls: Option<Arc<ClientConfig>>,
    /// Send silence while the caller is not speaking.
    pub continuous_audio: bool,
    pub twilio_parameters: BTreeMap<String, String>,
    pub openai: OpenAiSpec,
    pub custom: Option<Arc<CustomProtocol>>,
    /// The URL after interpolation (may hold secrets; print through `redact`).
    pub url: String,
    /// `protocol: webrtc` settings.
    pub webrtc: super::model::WebrtcSpec,
}

/// Compile `plan.target`'s wire settings, pushing positioned errors.
pub fn compile_wire(lp: &LoadedPlan, errs: &mut Vec<Diagnostic>) -> WireSpec {
    compile_wire_of(lp, &lp.plan.target, errs)
}

/// [`compile_wire`] of `t` (the plan's target, or a data row's rendering of it).
pub fn compile_wire_of(lp: &LoadedPlan, t: &Target, errs: &mut Vec<Diagnostic>) -> WireSpec {
    let mut err = |path: &[Seg], message: String| errs.push(lp.diag(path, message, None));
    let mut interp = |path: &[Seg], value: &str| match interpolate_env(value) {
        Ok(v) => v,
        Err(e) => {
            err(path, e.to_string());
            String::new()
        }
    };
    let url = interp(&plan_path!["target", "url"], &t.url);
    let headers = t
        .headers
        .iter()
        .map(|(k, v)| {
            let v = interp(&plan_path!["target", "headers", k.as_str()], v);
            // Header values carry credentials often enough to never print any of them.
            register(&v);
            (k.clone(), v)
        })
        .collect();
    let query = t
        .query
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                interp(&plan_path!["target", "query", k.as_str()], v),
            )
        })
        .collect();
    let twilio_parameters = t
        .twilio
        .custom_parameters
        .iter()
        .map(|(k, v)| {
            let path = plan_path!["target", "twilio", "custom_parameters", k.as_str()];
            (k.clone(), interp(&path, v))
        })
        .collect();

    let tls = if t.tls.ca_file.is_some() || t.tls.insecure {
        let ca = t.tls.ca_file.as_ref().map(|f| lp.resolve(f));
        match crate::protocol::tls::tls_config(ca.as_deref(), t.tls.insecure) {
            Ok(c) => Some(c),
            Err(e) => {
                errs.push(lp.diag(&plan_path!["target", "tls", "ca_file"], e.to_string(), None));
                None
            }
        }
    } else {
        None
    };

    let mut custom = None;
    let mut builtin_path = match t.protocol {
        ProtocolKind::Raw => "/",
        ProtocolKind::Twilio => "/twilio",
        ProtocolKind::OpenaiRealtime => "/openai",
        ProtocolKind::Custom | ProtocolKind::HttpChunks => "/",
        ProtocolKind::Webrtc => match t.webrtc.signaling {
            crate::protocol::webrtc::Signaling::Whip => "/whip",
            crate::protocol::webrtc::Signaling::Pipecat => "/api/offer",
        },
    }
    .to_string();
    match (t.protocol, &t.custom) {
        (ProtocolKind::Custom, None) => errs.push(lp.diag(
            &plan_path!["target", "protocol"],
            "`protocol: custom` needs a `target.custom` mapping (or `custom: {preset: raw}`)",
            None,
        )),
        (ProtocolKind::Custom, Some(spec)) => {
            let mut spec = spec.clone();
            for (k, v) in spec.vars.iter_mut() {
                *v = match interpolate_env(v) {
                    Ok(x) => x,
                    Err(e) => {
                        errs.push(lp.diag(
                            &plan_path!["target", "custom", "vars", k.as_str()],
                            e.to_string(),
                            None,
                        ));
                        String::new()
                    }
                };
            }
            spec.sample_rate = Some(t.rate());
            builtin_path = spec
                .builtin_path
                .clone()
                .unwrap_or_else(|| match spec.preset {
                    Some(Preset::Twilio) => "/twilio".into(),
                    _ => "/".into(),
                });
            match CustomProtocol::compile(&spec) {
                Ok(p) => custom = Some(p),
                Err(list) => {
                    for e in list {
                        errs.push(lp.diag(&plan_path!["target", "custom"], e.to_string(), None));
                    }
                }
            }
        }
        (_, Some(_)) => errs.push(lp.diag(
            &plan_path!["target", "custom"],
            format!(
                "`target.custom` is only used with `protocol: custom` (this plan says `{}`)",
                t.protocol.name()
            ),
            None,
        )),
        _ => {}
    }
    if t.protocol == ProtocolKind::Twilio && t.rate() != crate::protocol::twilio::SAMPLE_RATE {
        errs.push(lp.diag(
            &plan_path!["target", "sample_rate"],
            format!(
                "Twilio Media Streams carry 8000 Hz audio; remove `sample_rate: {}`",
                t.rate()
            ),
            None,
        ));
    }
    let continuous_audio = t.continuous_audio.unwrap_or(match t.protocol {
        // A WebRTC track streams continuously, as a microphone does.
        ProtocolKind::Twilio | ProtocolKind::Webrtc => true,
        ProtocolKind::OpenaiRealtime => t.openai.turn_detection == TurnDetection::ServerVad,
        _ => false,
    });
    WireSpec {
        protocol: t.protocol,
        builtin_path,
        headers,
        query,
        subprotocols: t.subprotocols.clone(),
        tls,
        continuous_audio,
        twilio_parameters,
        openai: t.openai.clone(),
        custom,
        url,
        webrtc: t.webrtc.clone(),
    }
}
