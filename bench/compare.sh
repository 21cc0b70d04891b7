#!/usr/bin/env bash
# Side by side: the `planrun bench` workload run by planrun and by Locust, same machine, same
# session, same reference agent, same core budget. See bench/README.md.
#
#   bench/compare.sh [USERS] [DURATION]      e.g. bench/compare.sh 100,300 20s
#
# USERS is a comma-separated list (default 100); DURATION is each step's length after its ramp
# (default 20s). Environment: RAMP (default 10s), DELAY (the agent's delay, default 200ms),
# LOCUST_VERSION / WEBSOCKET_CLIENT_VERSION / PSUTIL_VERSION (pins), PLANRUN (the binary),
# NICE (e.g. -10: run both clients and both agents at that niceness, to shield the figures from
# other work on a shared machine; needs root for negative values; default: unchanged).
#
# For each N, one after the other:
#   1. Locust (one process = one core, `taskset -c 0`) against one agent process that this
#      script starts once (`planrun agent`, `taskset -c 1`);
#   2. `taskset -c 0 planrun bench --users N --agent-cpus 1`, which starts its own agent process
#      with the same settings, pinned to core 1.
# Then it prints both rows in planrun bench's table format and the ratios.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

USERS="${1:-100}"
DURATION="${2:-20s}"
RAMP="${RAMP:-10s}"
DELAY="${DELAY:-200ms}"
REPLY=2s
LOCUST_VERSION="${LOCUST_VERSION:-2.47.0}"
WEBSOCKET_CLIENT_VERSION="${WEBSOCKET_CLIENT_VERSION:-1.9.2}"
PSUTIL_VERSION="${PSUTIL_VERSION:-7.2.2}"
PLANRUN="${PLANRUN:-$ROOT/target/release/planrun}"
VENV="$ROOT/target/bench-venv"
OUTDIR="$ROOT/target/bench-results/$(date +%Y%m%d-%H%M%S)"

secs() { # 20s | 20 | 1500ms | 2m -> seconds (may be fractional)
  local v="$1"
  case "$v" in
    *ms) awk -v x="${v%ms}" 'BEGIN{print x/1000}' ;;
    *s) echo "${v%s}" ;;
    *m) awk -v x="${v%m}" 'BEGIN{print x*60}' ;;
    *) echo "$v" ;;
  esac
}
DUR_S="$(secs "$DURATION")"
RAMP_S="$(secs "$RAMP")"
DELAY_MS="$(awk -v x="$(secs "$DELAY")" 'BEGIN{print x*1000}')"

# --- planrun -----------------------------------------------------------------------------
if [[ ! -x "$PLANRUN" ]]; then
  echo "building planrun (cargo build --release)..." >&2
  cargo build --release >&2
fi

# --- Locust venv (idempotent: a stamp names the pinned versions) --------------------------
STAMP="$VENV/.bench-stamp"
WANT="locust==$LOCUST_VERSION websocket-client==$WEBSOCKET_CLIENT_VERSION psutil==$PSUTIL_VERSION"
if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$WANT" ]]; then
  echo "setting up $VENV ($WANT)..." >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check $WANT >&2
  echo "$WANT" >"$STAMP"
fi
LOCUST="$VENV/bin/locust"

# --- pinning ------------------------------------------------------------------------------
CLIENT_PIN=()
AGENT_PIN=()
AGENT_CPUS_ARG=()
if command -v taskset >/dev/null 2>&1 && [[ "$(nproc)" -ge 2 ]]; then
  CLIENT_PIN=(taskset -c 0)
  AGENT_PIN=(taskset -c 1)
  AGENT_CPUS_ARG=(--agent-cpus 1)
  PINNING="clients on core 0, agents on core 1"
else
  PINNING="no pinning (needs taskset and 2+ cores)"
fi
if [[ -n "${NICE:-}" ]]; then
  CLIENT_PIN=(nice -n "$NICE" "${CLIENT_PIN[@]}")
  AGENT_PIN=(nice -n "$NICE" "${AGENT_PIN[@]}")
  PINNING="$PINNING, niceness $NICE"
fi

mkdir -p "$OUTDIR"
AGENT_PID=""
cleanup() {
  if [[ -n "$AGENT_PID" ]]; then kill "$AGENT_PID" 2>/dev/null || true; wait "$AGENT_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT INT TERM

# --- the agent Locust talks to ------------------------------------------------------------
"${AGENT_PIN[@]}" "$PLANRUN" agent --listen 127.0.0.1:0 --asr-latency 0ms --llm-latency "$DELAY" \
  --tts-latency 0ms --reply-duration "$REPLY" 2>"$OUTDIR/agent.log" >/dev/null &
AGENT_PID=$!
URL=""
for _ in $(seq 100); do
  URL="$(sed -n 's/^planrun agent listening on \([^ ]*\).*/\1/p' "$OUTDIR/agent.log" | head -1)"
  [[ -n "$URL" ]] && break
  sleep 0.1
done
[[ -n "$URL" ]] || { echo "the agent did not start:" >&2; cat "$OUTDIR/agent.log" >&2; exit 1; }

echo "== planrun vs Locust: users $USERS, ramp ${RAMP_S}s + ${DUR_S}s per step, agent delay ${DELAY_MS}ms, replies $REPLY"
echo "== $(nproc) cores, $PINNING; load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== $("$PLANRUN" --version 2>/dev/null || echo planrun), locust $LOCUST_VERSION, websocket-client $WEBSOCKET_CLIENT_VERSION, $("$VENV/bin/python" --version)"
echo "== binary $PLANRUN built $(date -u -r "$PLANRUN" +%Y-%m-%dT%H:%M:%SZ), tree at $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "== results in $OUTDIR"

# Per-core jiffies (busy total) from /proc/stat, to show how busy each core was during a run,
# including with other people's work on a shared machine.
corestat() { awk '/^cpu[0-9]+ /{b=$2+$3+$4+$7+$8+$9; t=b+$5+$6; printf "%s %d %d ", $1, b, t} END{print ""}' /proc/stat; }
now_s() { date +%s.%N; }

IFS=',' read -r -a NS <<<"$USERS"
for N in "${NS[@]}"; do
  RATE="$(awk -v n="$N" -v r="$RAMP_S" 'BEGIN{ if (r > 0) print n/r; else print n }')"
  TOTAL="$(awk -v d="$DUR_S" -v r="$RAMP_S" 'BEGIN{print int(d + r + 0.999)}')"
  echo "-- N=$N: Locust (-u $N -r $RATE -t ${TOTAL}s)..." >&2
  { corestat; now_s; } >"$OUTDIR/cores-locust-$N.txt"
  BENCH_OUT="$OUTDIR/locust-$N.json" BENCH_RAMP_S="$RAMP_S" BENCH_DELAY_MS="$DELAY_MS" \
    BENCH_AGENT_PID="$AGENT_PID" \
    "${CLIENT_PIN[@]}" "$LOCUST" -f "$ROOT/bench/locustfile.py" --headless -u "$N" -r "$RATE" \
    -t "${TOTAL}s" --stop-timeout 10 --host "$URL" --only-summary \
    >"$OUTDIR/locust-$N.log" 2>&1 || true
  { corestat; now_s; } >>"$OUTDIR/cores-locust-$N.txt"
  [[ -f "$OUTDIR/locust-$N.json" ]] || { echo "Locust wrote no result; see $OUTDIR/locust-$N.log" >&2; tail -20 "$OUTDIR/locust-$N.log" >&2; exit 1; }
  echo "-- N=$N: planrun bench..." >&2
  { corestat; now_s; } >"$OUTDIR/cores-planrun-$N.txt"
  "${CLIENT_PIN[@]}" "$PLANRUN" bench --users "$N" --duration "$DURATION" --ramp "$RAMP" \
    --delay "$DELAY" --reply "$REPLY" "${AGENT_CPUS_ARG[@]}" \
    >"$OUTDIR/planrun-$N.txt" 2>"$OUTDIR/planrun-$N.err"
  { corestat; now_s; } >>"$OUTDIR/cores-planrun-$N.txt"
done

# --- the table and the ratios ---------------------------------------------------------------
"$VENV/bin/python" - "$OUTDIR" "$USERS" <<'PY'
import json, math, os, re, sys

outdir, users = sys.argv[1], [int(u) for u in sys.argv[2].split(",")]

def planrun_row(n):
    lines = open(os.path.join(outdir, f"planrun-{n}.txt")).read().splitlines()
    row = next(l for l in lines if l.strip() and l.split()[0] == str(n))
    f = re.sub(r"/\s+", "/", row).split()
    lag = [float(x) for x in f[8].split("/")]
    err = [float(x) for x in f[9].split("/")]
    return {
        "users": int(f[0]), "sustained": int(f[1]), "calls": int(f[2]), "failed": int(f[3]),
        "cpu_per_user_s": float(f[4]), "us_per_msg": float(f[5]), "msgs_per_s": float(f[6]),
        "lag_p50_ms": lag[0], "lag_p99_ms": lag[1], "lag_max_ms": lag[2],
        "ttfa_err_p50_ms": err[0], "ttfa_err_p99_ms": err[1], "agent_cpu_pct": float(f[10]),
    }

hdr = ("tool     users  sustained  calls  failed  cpu-s/user-s  µs/msg  msgs/s  "
       "lag p50/p99/max ms    ttfa err p50/p99 ms  agent cpu%")
def fmt(tool, r):
    return (f"{tool:<7} {r['users']:>6}  {r['sustained']:>9}  {r['calls']:>5}  {r['failed']:>6}  "
            f"{r['cpu_per_user_s']:>12.5f}  {r['us_per_msg']:>6.2f}  {r['msgs_per_s']:>6.0f}  "
            f"{r['lag_p50_ms']:>5.2f}/{r['lag_p99_ms']:>5.2f}/{r['lag_max_ms']:>6.2f}   "
            f"{r['ttfa_err_p50_ms']:>8.2f}/{r['ttfa_err_p99_ms']:>8.2f}  {r['agent_cpu_pct']:>9.0f}")

print()
print(hdr)
rows = []
for n in users:
    p = planrun_row(n)
    l = json.load(open(os.path.join(outdir, f"locust-{n}.json")))
    rows.append((n, p, l))
    print(fmt("planrun", p))
    print(fmt("locust", l))
print()
print("ratios (same N, same agent, one client core each):")
print("  users  CPU/user-s locust÷planrun  ttfa err p99 ms planrun | locust  lag p99 ms planrun | locust  sustained planrun | locust")
for n, p, l in rows:
    ratio = l["cpu_per_user_s"] / p["cpu_per_user_s"] if p["cpu_per_user_s"] > 0 else math.nan
    print(f"  {n:>5}  {ratio:>26.1f}×  {p['ttfa_err_p99_ms']:>16.2f} | {l['ttfa_err_p99_ms']:<7.2f}"
          f"  {p['lag_p99_ms']:>11.2f} | {l['lag_p99_ms']:<7.2f}  {p['sustained']:>10}/{n} | {l['sustained']}/{n}")
def cores(tool, n):
    """Busy % of each core over the whole run of one tool (whoever used it)."""
    lines = open(os.path.join(outdir, f"cores-{tool}-{n}.txt")).read().split("\n")
    a, b = lines[0].split(), lines[2].split()
    out = []
    for i in range(0, min(len(a), len(b)) - 2, 3):
        busy = int(b[i + 1]) - int(a[i + 1])
        total = int(b[i + 2]) - int(a[i + 2])
        out.append(f"{a[i]} {100.0 * busy / max(1, total):.0f}%")
    return ", ".join(out)

print()
print("core use over each run (the client and its agent, plus anything else on the machine):")
for n, p, l in rows:
    p["cores"], l["cores"] = cores("planrun", n), cores("locust", n)
    l_own = 100.0 * l["cpu_s"] / l["wall_s"]
    print(f"  N={n:<5} planrun: {p['cores']}   locust: {l['cores']} (Locust itself {l_own:.0f}%)")
json.dump([{"users": n, "planrun": p, "locust": l} for n, p, l in rows],
          open(os.path.join(outdir, "summary.json"), "w"), indent=2)
for n, _, l in rows:
    if l.get("errors"):
        print(f"  locust N={n} errors: {l['errors']}")
    log = open(os.path.join(outdir, f"locust-{n}.log")).read()
    hot = log.count("CPU usage above")
    if hot:
        print(f"  locust N={n}: Locust itself warned {hot}× 'CPU usage above 90%'")
PY
