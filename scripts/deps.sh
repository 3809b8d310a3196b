#!/usr/bin/env bash
# Installs what lexbus needs to build and test, from Debian's packages.
# Only missing packages are installed; needs root (or sudo) for apt-get.
#   scripts/deps.sh            build + test dependencies
#   scripts/deps.sh --bench    also the benchmark peers (nats-server, redis-server, mosquitto)
set -euo pipefail

pkgs=(
  build-essential autoconf automake libtool pkg-config
  libevent-dev libjansson-dev libssl-dev libjwt-dev
  libhiredis-dev libmosquitto-dev
  libmsgpack-dev liblua5.4-dev libwslay-dev libhttp-parser-dev
  python3 python3-msgpack python3-websockets python3-prometheus-client
  openssl procps redis-server chromium
)
# Node runs the real third-party clients (socket.io-client, ioredis) in the
# tests; a machine that already has a node (nodesource, say) keeps it.
command -v node >/dev/null 2>&1 || pkgs+=(nodejs)
command -v npm >/dev/null 2>&1 || pkgs+=(npm)
if [[ "${1:-}" == "--bench" ]]; then
  pkgs+=(nats-server redis-server mosquitto valgrind)
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "deps: all ${#pkgs[@]} packages present"
  exit 0
fi
echo "deps: installing ${missing[*]}"
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
