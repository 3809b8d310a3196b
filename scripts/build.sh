#!/usr/bin/env bash
# Configures and builds lexbus in _build/ (out of the source tree).
#   scripts/build.sh [configure options...]
set -euo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"
cd "$top"
if [[ ! -x configure || configure.ac -nt configure ]]; then
  autoreconf -fi >/dev/null
fi
mkdir -p _build
cd _build
if [[ ! -f Makefile || ../configure -nt Makefile || -n "${*:-}" ]]; then
  ../configure -q "$@"
fi
make -j"$(nproc)" >/dev/null
echo "build: ok ($top/_build)"
