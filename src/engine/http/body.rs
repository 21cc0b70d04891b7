//! Request bodies (one chunk of audio as WAV or raw PCM, bare or in a multipart form) and
//! response excerpts for failure messages.

use crate::plan::compile::HttpTarget;
use crate::plan::model::{ChunkFormat, HttpBody};

/// Characters of a response body quoted in a failure message.
const EXCERPT_CHARS: usize = 200;

/// A complete PCM16 mono WAV file.
pub fn wav_bytes(samples: &[i16], rate: u32) -> Vec<u8> {
    let data_len = (samples.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + samples.len() * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    out.extend(pcm16_bytes(samples));
    out
}

fn pcm16_bytes(samples: &[i16]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

/// The request's content type and body for one chunk.
pub fn chunk_body(
    http: &HttpTarget,
    samples: &[i16],
    rate: u32,
    boundary: &str,
) -> (String, Vec<u8>) {
    let audio = match http.format {
        ChunkFormat::Wav => wav_bytes(samples, rate),
        ChunkFormat::Pcm16 => pcm16_bytes(samples),
    };
    match http.body {
        HttpBody::Raw => (http.part_content_type.clone(), audio),
        HttpBody::Multipart => {
            let mut body = Vec::with_capacity(audio.len() + 256);
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{}\"; filename=\"{}\"\r\nContent-Type: {}\r\n\r\n",
                    http.field.replace('"', "%22"),
                    http.file_name.replace('"', "%22"),
                    http.part_content_type
                )
                .as_bytes(),
            );
            body.extend_from_slice(&audio);
            body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
            (format!("multipart/form-data; boundary={boundary}"), body)
        }
    }
}

/// The start of a response body, printable, for failure messages.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text
        .chars()
        .take(EXCERPT_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > EXCERPT_CHARS {
        out.push('…');
    }
    if out.trim().is_empty() {
        "(empty body)".to_string()
    } else {
        format!("`{}`", out.trim())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn target(body: HttpBody, format: ChunkFormat) -> HttpTarget {
        HttpTarget {
            chunk: Duration::from_secs(1),
            body,
            format,
            field: "audio".into(),
            file_name: "c.wav".into(),
            part_content_type: "audio/wav".into(),
            method: "POST".into(),
            response_timeout: Duration::from_secs(1),
            capture: vec![],
        }
    }

    #[test]
    fn wav_header_round_trips_through_hound() {
        let samples: Vec<i16> = (0..160).map(|i| (i * 100) as i16).collect();
        let bytes = wav_bytes(&samples, 8000);
        let mut r = hound::WavReader::new(std::io::Cursor::new(bytes)).unwrap();
        assert_eq!(r.spec().sample_rate, 8000);
        assert_eq!(r.spec().channels, 1);
        let back: Vec<i16> = r.samples::<i16>().map(Result::unwrap).collect();
        assert_eq!(back, samples);
    }

    #[test]
    fn multipart_body_has_one_part_with_the_audio() {
        let t = target(HttpBody::Multipart, ChunkFormat::Pcm16);
        let (ct, body) = chunk_body(&t, &[1, -2], 16_000, "B");
        assert_eq!(ct, "multipart/form-data; boundary=B");
        let text = String::from_utf8_lossy(&body);
        assert!(text.starts_with(
            "--B\r\nContent-Disposition: form-data; name=\"audio\"; filename=\"c.wav\"\r\n"
        ));
        assert!(body.windows(4).any(|w| w == [1, 0, 0xfe, 0xff]));
        assert!(text.ends_with("\r\n--B--\r\n"));
    }

    #[test]
    fn excerpt_is_short_and_printable() {
        assert_eq!(excerpt(b""), "(empty body)");
        assert_eq!(excerpt(b"<h1>oops</h1>\n"), "`<h1>oops</h1>`");
        let long = vec![b'x'; 1000];
        assert_eq!(excerpt(&long).chars().count(), EXCERPT_CHARS + 3);
    }
}
