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
  python3 openssl procps
)
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
