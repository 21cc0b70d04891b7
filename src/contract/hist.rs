//! HDR histograms in `metrics.json`: V2 + deflate, base64 (exact, mergeable, ~200 bytes each).

use base64::Engine;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};

/// Encode a histogram (values in µs) as base64 of its V2-deflate serialization.
pub fn encode(h: &Histogram<u64>) -> Option<String> {
    let mut bytes = Vec::new();
    V2DeflateSerializer::new().serialize(h, &mut bytes).ok()?;
    Some(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// Why a stored histogram could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HistError {
    #[error("bad base64: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("bad histogram: {0}")]
    Histogram(String),
}

/// Decode what [`encode`] wrote.
pub fn decode(text: &str) -> Result<Histogram<u64>, HistError> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(text.trim())?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| HistError::Histogram(format!("{e:?}")))
}

/// Distinct recorded values (bucket medians, µs) with their counts, ascending.
pub fn values(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| {
            (
                h.median_equivalent(v.value_iterated_to()),
                v.count_at_value(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_is_exact() {
        let mut h = Histogram::<u64>::new(3).unwrap();
        for v in [1_000u64, 2_000, 2_000, 350_000] {
            h.record(v).unwrap();
        }
        let text = encode(&h).unwrap();
        let back = decode(&text).unwrap();
        assert_eq!(back.len(), 4);
        assert_eq!(back.value_at_quantile(0.5), h.value_at_quantile(0.5));
        assert_eq!(values(&back).len(), 3);
        assert!(decode("not base64!").is_err());
    }
}
