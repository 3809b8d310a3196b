#!/usr/bin/env bash
# Sets up lexbus on a fresh Debian machine and runs lexbusd in the
# foreground with the example configuration (Unix socket /tmp/lexbus.sock).
# Stop it with Ctrl-C (it drains and exits 0).
set -euo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"
"$top/scripts/deps.sh"
"$top/scripts/build.sh"
echo "quickstart: starting lexbusd -c bus.conf.example (try: _build/client/lexbus services)"
exec "$top/_build/core/lexbusd" -c "$top/bus.conf.example"
