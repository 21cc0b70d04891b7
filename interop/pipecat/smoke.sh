#!/usr/bin/env bash
# Self-check of the Pipecat interop bot, without planrun:
# set up the venv, start bot.py on a free port, wait for READY, run N concurrent
# Twilio-side calls with twilio_client.py, stop the bot with SIGTERM.
#
#   interop/pipecat/smoke.sh [CALLS]       (default 3; exit 0 = every call had all figures)
#
# Shows the pattern a test harness uses: PY=$(setup.sh | tail -n1); start the bot
# with --port 0; read "READY port=N" from its stdout; SIGTERM it when done.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
calls="${1:-3}"

py="$("$here/setup.sh" | tail -n1)"
tmp="$(mktemp -d)"
bot_pid=""
cleanup() {
  if [ -n "$bot_pid" ] && kill -0 "$bot_pid" 2>/dev/null; then kill -TERM "$bot_pid"; wait "$bot_pid" || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

"$py" "$here/bot.py" --port 0 >"$tmp/bot.out" 2>"$tmp/bot.err" &
bot_pid=$!
port=""
for _ in $(seq 600); do   # up to 60 s: importing pipecat takes seconds on a busy machine
  port="$(sed -n 's/^READY port=\([0-9]*\)$/\1/p' "$tmp/bot.out")"
  [ -n "$port" ] && break
  kill -0 "$bot_pid" 2>/dev/null || { echo "smoke: bot exited before READY:" >&2; cat "$tmp/bot.err" >&2; exit 1; }
  sleep 0.1
done
[ -n "$port" ] || { echo "smoke: no READY line within 60 s" >&2; cat "$tmp/bot.err" >&2; exit 1; }
echo "smoke: bot ready on port $port" >&2

rc=0
"$py" "$here/twilio_client.py" --url "ws://127.0.0.1:$port/ws" --calls "$calls" || rc=$?

kill -TERM "$bot_pid"
bot_rc=0
wait "$bot_pid" || bot_rc=$?
bot_pid=""
if [ "$bot_rc" -ne 0 ]; then
  echo "smoke: bot exited with $bot_rc after SIGTERM" >&2
  tail -n 20 "$tmp/bot.err" >&2
  rc=1
fi
if grep -q "ERROR" "$tmp/bot.err"; then
  echo "smoke: the bot logged errors:" >&2
  grep "ERROR" "$tmp/bot.err" | head -n 20 >&2
fi
exit "$rc"
