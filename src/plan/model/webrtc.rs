//! `target.webrtc`: settings of `protocol: webrtc` (signalling style and the setup timeouts).

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use super::Dur;
use crate::protocol::webrtc::Signaling;

/// Settings of `protocol: webrtc`: the offer is POSTed to `target.url` (with `target.headers`),
/// then ICE, DTLS-SRTP and Opus audio run over UDP.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebrtcSpec {
    /// How the SDP offer and answer travel: `whip` (default: `POST` of `application/sdp`, the
    /// answer is the response body) or `pipecat` (Pipecat SmallWebRTC's `POST /api/offer` JSON).
    #[serde(default)]
    pub signaling: Signaling,
    /// ICE and the DTLS handshake must complete within this long after the answer (default 10s);
    /// the signalling request itself is bounded by `target.connect_timeout`.
    #[serde(default = "default_ice_timeout")]
    pub ice_timeout: Dur,
    /// Once connected, no RTP at all from the agent for this long ends the call as
    /// `connection_closed` (default 3s; WebRTC tracks stream silence while nobody speaks).
    #[serde(default = "default_media_timeout")]
    pub media_timeout: Dur,
}

impl Default for WebrtcSpec {
    fn default() -> Self {
        WebrtcSpec {
            signaling: Signaling::default(),
            ice_timeout: default_ice_timeout(),
            media_timeout: default_media_timeout(),
        }
    }
}

fn default_ice_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}

fn default_media_timeout() -> Dur {
    Dur(Duration::from_secs(3))
}

/// `protocol: webrtc` checks: the signalling URL and a sample rate Opus codes natively.
pub fn validate_webrtc(lp: &crate::plan::LoadedPlan) -> Vec<crate::plan::diag::Diagnostic> {
    use crate::plan_path;
    use crate::protocol::webrtc::OPUS_RATES;
    let t = &lp.plan.target;
    let mut errs = Vec::new();
    let url = t.url.trim();
    if url != "builtin" && !(url.starts_with("http://") || url.starts_with("https://")) {
        errs.push(lp.diag(
            &plan_path!["target", "url"],
            format!(
                "target url `{url}` is not supported with `protocol: webrtc`: expected `builtin`, \
                 or the `http://…`/`https://…` URL the SDP offer is POSTed to"
            ),
            None,
        ));
    }
    if !OPUS_RATES.contains(&t.rate()) {
        errs.push(lp.diag(
            &plan_path!["target", "sample_rate"],
            format!(
                "`protocol: webrtc` carries Opus, which codes 8000, 12000, 16000, 24000 or \
                 48000 Hz; `sample_rate: {}` is none of them",
                t.rate()
            ),
            None,
        ));
    }
    errs
}
