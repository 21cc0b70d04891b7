#!/usr/bin/env bash
# Regenerate the speech fixtures in audio_files/ deterministically.
#
# Each clip: 16 kHz, mono, PCM 16-bit signed little-endian WAV, leading and
# trailing silence trimmed, peak-normalized to -3 dBFS. Beside each WAV a .txt
# holds exactly the spoken text (single line, trailing newline).
#
# Requires: espeak-ng, sox  (apt-get install -y espeak-ng sox)
# Usage:    scripts/make_audio.sh [OUT_DIR]   (default: <repo>/audio_files)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT_DIR="${1:-$REPO_ROOT/audio_files}"
VOICE="en-us"
RATE=16000
PEAK_DB=-3
# Silence-trim threshold (0.01% of full scale, ~ -80 dBFS). espeak-ng pads its
# output with exact digital silence, so a very low threshold removes all of it
# while keeping soft onsets/decays intact (e.g. the /h/ of "Hello", the final
# /d/ of "second") and leaving no click at the cut point.
TRIM_THRESH="0.01%"

for tool in espeak-ng sox; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "error: $tool not found (apt-get install -y espeak-ng sox)" >&2
    exit 1
  }
done

mkdir -p "$OUT_DIR"
TMP_DIR="$(mktemp -d)"
trap 'rm -rf "$TMP_DIR"' EXIT

# sox global options: -R = repeatable (fixed PRNG seed, no timestamps),
# -D = no automatic dither, -V1 = errors only. Together: byte-identical output.
SOX=(sox -R -D -V1)
# Output format: 16 kHz, mono, 16-bit signed integer PCM (WAV is little-endian).
OUT_FMT=(-r "$RATE" -c 1 -b 16 -e signed-integer)

# speak NAME SPEED TEXT
speak() {
  local name="$1" speed="$2" text="$3"
  local raw="$TMP_DIR/$name.raw.wav"
  espeak-ng -v "$VOICE" -s "$speed" -w "$raw" "$text"
  "${SOX[@]}" "$raw" "${OUT_FMT[@]}" "$OUT_DIR/$name.wav" \
    remix - \
    rate -v "$RATE" \
    silence 1 0.05 "$TRIM_THRESH" reverse silence 1 0.05 "$TRIM_THRESH" reverse \
    gain -n "$PEAK_DB"
  printf '%s\n' "$text" >"$OUT_DIR/$name.txt"
  echo "wrote $OUT_DIR/$name.wav"
}

speak hello       160 "Hello, can you hear me?"
speak weather     160 "What is the weather like in Paris tomorrow?"
speak book_flight 160 "Please book a flight to Berlin for Friday."
speak cancel      160 "Stop, wait a second."
# Backchannel / false-alarm clip: spoken fast so it stays well under 400 ms.
speak mhmm        400 "Mhmm."

# Non-speech false alarm: ~250 ms burst of low-passed pink noise with a fast
# attack and a decaying tail, loosely cough-like. Deterministic thanks to -R.
"${SOX[@]}" -n "${OUT_FMT[@]}" "$OUT_DIR/cough.wav" \
  synth 0.25 pinknoise \
  lowpass 2500 highpass 150 \
  fade q 0.02 0.25 0.15 \
  vol 0.5 \
  gain -n "$PEAK_DB"
printf '%s\n' "(cough)" >"$OUT_DIR/cough.txt"
echo "wrote $OUT_DIR/cough.wav"
