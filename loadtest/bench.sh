#!/usr/bin/env bash
# The benchmark set recorded in BENCHMARKS.md: starts the service on embedded defaults, makes the caller
# speech, runs 1 session × 5 turns and a concurrency sweep, and leaves the JSON reports in OUT (default
# /tmp/voice-agent-bench). Loopback only; every run is bounded.
#   bash loadtest/bench.sh [OUT] [SESSIONS...]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-/tmp/voice-agent-bench}
shift || true
sweep=("$@")
[[ ${#sweep[@]} -eq 0 ]] && sweep=(2 3 4 6)
mkdir -p "$out"
port=${BENCH_PORT:-18090}
key=bench-$RANDOM$RANDOM
npm run -s make-speech -- --text "What time is it?" --out "$out/time.wav" >/dev/null
VOICE_AGENT_API_KEYS=$key PORT=$port HOST=127.0.0.1 LOG_LEVEL=warn VOICE_AGENT_CONFIG=${BENCH_CONFIG:-} \
  node --import tsx src/main.ts >"$out/server.log" 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.5; done
run() { VOICE_AGENT_API_KEY=$key npm run -s loadtest -- --url "ws://127.0.0.1:$port/v1/ws" --audio "$out/time.wav" "$@"; }
echo "== 1 session × 5 turns"
run --sessions 1 --turns 5 --json "$out/sessions-1.json" || true
for n in "${sweep[@]}"; do
  echo "== $n sessions × 4 turns"
  run --sessions "$n" --turns 4 --json "$out/sessions-$n.json" || true
done
echo "== WebRTC 1 session × 5 turns"
VOICE_AGENT_API_KEY=$key npm run -s loadtest -- --transport webrtc --url "http://127.0.0.1:$port/v1/webrtc/offer" --audio "$out/time.wav" --sessions 1 --turns 5 --json "$out/webrtc-1.json" || true
for n in ${WEBRTC_MEDIA_CALLS:-10 20}; do
  echo "== WebRTC media path alone, $n calls × 20 s"
  VOICE_AGENT_API_KEY=$key npx tsx loadtest/webrtc-media.ts --url "http://127.0.0.1:$port/v1/webrtc/offer" --calls "$n" --seconds 20 >"$out/webrtc-media-$n.json" || true
  cat "$out/webrtc-media-$n.json"
done
echo "reports in $out; commit $(git rev-parse --short HEAD)"
