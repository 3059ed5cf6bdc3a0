#!/bin/bash
# Voice-to-voice at the client on every transport, one after another against one service on embedded models:
# the device WebSocket, the realtime socket, a Twilio media stream (µ-law 8 kHz), native SIP (G.711 RTP) and
# WebRTC (libwebrtc client, Opus), one caller at a time, TURNS turns each of eSpeak's "What time is it?".
# Loopback only (ports 18090 and SIP 15070). Prints one summary line per transport; JSON and logs in OUTDIR.
# usage: bash loadtest/v2v-transports.sh OUTDIR [TURNS]
#   TRANSPORTS="webrtc sip" runs only those callers; EXTRA_CONFIG='{"webrtc": {"opusFrameMs": 10}}' adds sections to
#   the service's config (top-level keys; a section given replaces the script's own).
#   LOADTEST_ARGS="--fixed-phase" is passed to every caller (by default each turn starts at another point of the 20 ms frame).
set -u
OUT=$(realpath -m "$1"); TURNS=${2:-10}
TRANSPORTS=${TRANSPORTS:-ws realtime twilio sip webrtc}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
python3 - "$OUT/config.json" "${EXTRA_CONFIG:-{\}}" <<'PY'
import json, sys
config = { "host": "127.0.0.1", "sip": { "host": "127.0.0.1", "port": 15070, "rtpPortMin": 30000, "rtpPortMax": 30200 }, "telephony": { "twilio": { "authToken": "v2v-bench-token" } } }
config.update(json.loads(sys.argv[2]))
json.dump(config, open(sys.argv[1], "w"))
PY
espeak-ng -v en-us -w "$OUT/hello.wav" "What time is it?"
VOICE_AGENT_CONFIG=$OUT/config.json PORT=18090 LOG_LEVEL=info setsid npm start > "$OUT/server.log" 2>&1 &
SRV=$!
for i in $(seq 1 120); do curl -sf http://127.0.0.1:18090/healthz >/dev/null && break; sleep 1; done
export TWILIO_AUTH_TOKEN=v2v-bench-token
run() { name=$1; shift; case " $TRANSPORTS " in *" $name "*) ;; *) return;; esac; timeout 600 npm run -s loadtest -- --audio "$OUT/hello.wav" --sessions 1 --turns "$TURNS" --json "$OUT/$name.json" ${LOADTEST_ARGS:-} "$@" > "$OUT/$name.txt" 2>&1; }
run ws --url ws://127.0.0.1:18090/v1/ws
run realtime --transport realtime --url ws://127.0.0.1:18090/v1/realtime
run twilio --transport twilio --url ws://127.0.0.1:18090/v1/telephony/twilio
run sip --transport sip --url sip://127.0.0.1:15070 --metrics http://127.0.0.1:18090/metrics
run webrtc --transport webrtc --url http://127.0.0.1:18090/v1/webrtc/offer
# npm start's node grandchild holds the port: stop its whole process group (setsid made npm its leader).
kill -TERM -- -$SRV 2>/dev/null; wait $SRV 2>/dev/null
for name in $TRANSPORTS; do
  printf '%-9s %s\n' "$name" "$(grep -h 'voice-to-voice' "$OUT/$name.txt" 2>/dev/null || echo 'no result')"
done
# The server's own view, per transport: the end-of-turn wait and server v2v of each turn.
python3 - "$OUT/server.log" <<'PY'
import json, sys
turns = {}
for line in open(sys.argv[1]):
    try:
        d = json.loads(line)
    except ValueError:
        continue
    if d.get('msg') == 'turn answered':
        turns.setdefault(d['transport'], []).append(d)
for transport, rows in turns.items():
    ends = sorted(r['endpointMs'] for r in rows)
    v2v = sorted(r['serverV2vMs'] for r in rows)
    print(f"{transport:9} server: endpoint p50 {ends[len(ends)//2]:.0f} ms (max {ends[-1]:.0f}), serverV2v p50 {v2v[len(v2v)//2]:.0f} ms, preemptive {sum(1 for r in rows if r['preemptive'])}/{len(rows)}")
PY
