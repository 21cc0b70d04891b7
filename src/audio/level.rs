//! Level meters (RMS in dBFS), allocation-free so they can run per frame.

use super::{DBFS_FLOOR, FULL_SCALE};

/// RMS level of `samples` in dBFS relative to full scale 32768 (a full-scale square wave is
/// 0 dBFS; a full-scale sine ≈ -3.01 dBFS).
///
/// Silence (all zeros) and an empty slice return [`DBFS_FLOOR`] (-120.0) rather than
/// `f64::NEG_INFINITY`, and any quieter level is clamped to it, so averages and differences of
/// levels stay finite.
pub fn dbfs(samples: &[i16]) -> f64 {
    level_from_sum(sum_squares(samples.iter().copied()), samples.len())
}

/// Same as [`dbfs`] on raw PCM16 little-endian bytes (the wire format), without allocating. An
/// odd trailing byte is ignored.
pub fn dbfs_le_bytes(bytes: &[u8]) -> f64 {
    let chunks = bytes.chunks_exact(2);
    let n = chunks.len();
    level_from_sum(
        // ok: `chunks_exact(2)` yields 2-byte slices, so indexing 0 and 1 cannot fail.
        sum_squares(chunks.map(|b| i16::from_le_bytes([b[0], b[1]]))),
        n,
    )
}

fn sum_squares(samples: impl Iterator<Item = i16>) -> u64 {
    // Each square is at most 2^30, so u64 cannot overflow below 2^34 samples (~4 days at 48 kHz).
    samples
        .map(|s| {
            let s = i64::from(s);
            (s * s) as u64
        })
        .fold(0u64, u64::saturating_add)
}

fn level_from_sum(sum: u64, n: usize) -> f64 {
    if sum == 0 || n == 0 {
        return DBFS_FLOOR;
    }
    let mean_square = sum as f64 / n as f64 / (FULL_SCALE * FULL_SCALE);
    (10.0 * mean_square.log10()).max(DBFS_FLOOR)
}
