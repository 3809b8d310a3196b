#!/usr/bin/env bash
# The websocket transport's benchmark, ratios in one run:
#   raw WebSocket (/lexbus) 1 -> 1 throughput and RTT next to the unix transport
#     (tests/bench/websocket/wsbench.c: one load generator, only the framing differs),
#     and the floor under both: a bare Unix socket and a bare TCP loopback socket;
#   Socket.IO events/s and the ack round trip next to the real Node Socket.IO
#     server (npm socket.io 4.x, socketio/relay.js), both driven by the same
#     socket.io-client load (socketio/load.js), plus each server's CPU per event.
#
#   tests/bench/websocket/run.sh [--quick] [--out FILE.json]
#
# LEXBUSD and WSBENCH may point at prebuilt binaries; by default an optimised,
# sanitizer-free build is made in _build-bench/ (as tests/bench/run.sh does).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
top="$(cd "$here/../../.." && pwd)"
quick=0
out="$top/bench-websocket.json"
while (($#)); do
  case "$1" in
    --quick) quick=1 ;;
    --out) out="$2"; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
for tool in node npm python3; do command -v "$tool" >/dev/null || { echo "run.sh: $tool not found (scripts/deps.sh)" >&2; exit 1; }; done

bdir="$top/_build-bench"
if [[ -z "${LEXBUSD:-}" || -z "${WSBENCH:-}" ]]; then
  if [[ ! -x "$top/configure" ]]; then (cd "$top" && autoreconf -fi >/dev/null); fi
  mkdir -p "$bdir"
  (cd "$bdir" && { [[ -f Makefile ]] || "$top/configure" -q CFLAGS="-O2 -g"; } && make -j"$(nproc)" >/dev/null)
  LEXBUSD="$bdir/core/lexbusd"
  WSBENCH="$bdir/tests/bench/wsbench"
fi

# The pinned npm packages (socketio/package-lock.json), installed once per lock.
lock="$here/socketio/package-lock.json"
npmdir="$bdir/tests/bench/websocket/npm-$(sha256sum "$lock" | cut -c1-16)"
if [[ ! -f "$npmdir/.installed" ]]; then
  rm -rf "$npmdir"; mkdir -p "$npmdir"
  cp "$here/socketio/package.json" "$lock" "$npmdir/"
  (cd "$npmdir" && npm ci --no-audit --no-fund --loglevel=error --cache "$bdir/tests/bench/websocket/.npm-cache" >/dev/null)
  touch "$npmdir/.installed"
fi
export NODE_PATH="$npmdir/node_modules"

tmp="$(mktemp -d /tmp/lexbus-wsbench.XXXXXX)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "run.sh: port $1 never opened" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

ws_port=$(free_port); node_port=$(free_port)
printf '[bus]\nnode = bench\nlog_level = warn\n[plugin unix]\npath = %s/lexbus.sock\n[plugin websocket]\nlisten = 127.0.0.1:%s\n' \
  "$tmp" "$ws_port" > "$tmp/bus.conf"
"$LEXBUSD" -c "$tmp/bus.conf" 2>"$tmp/lexbusd.log" & lexbus_pid=$!; pids+=($lexbus_pid)
node "$here/socketio/relay.js" "$node_port" >"$tmp/relay.log" 2>&1 & node_pid=$!; pids+=($node_pid)
wait_port "$ws_port"; wait_port "$node_port"

if ((quick)); then n_stream=200000; n_rtt=2000; n_sio=20000; n_ack=500; rounds=1; floor_mb=500
else n_stream=1000000; n_rtt=20000; n_sio=100000; n_ack=3000; rounds=3; floor_mb=2000; fi
results="$tmp/results.jsonl"
: > "$results"
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }   # utime+stime, clock ticks
echo "running ($rounds rounds, interleaved; --quick for a smoke run)" >&2
for r in $(seq "$rounds"); do
  for size in 16 128 1024; do
    "$WSBENCH" "unix:$tmp/lexbus.sock" stream "$n_stream" "$size" >> "$results"
    "$WSBENCH" "ws://127.0.0.1:$ws_port/lexbus" stream "$n_stream" "$size" >> "$results"
  done
  "$WSBENCH" floor unix "$floor_mb" >> "$results"
  "$WSBENCH" floor tcp "$floor_mb" >> "$results"
  "$WSBENCH" "unix:$tmp/lexbus.sock" rtt "$n_rtt" >> "$results"
  "$WSBENCH" "ws://127.0.0.1:$ws_port/lexbus" rtt "$n_rtt" >> "$results"
  for srv in lexbus node; do
    if [[ $srv == lexbus ]]; then port=$ws_port; pid=$lexbus_pid; else port=$node_port; pid=$node_pid; fi
    c0=$(cpu "$pid")
    line=$(node "$here/socketio/load.js" "http://127.0.0.1:$port" events "$n_sio" 16)
    c1=$(cpu "$pid")
    echo "$line" | python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); d["server"]=sys.argv[1]; d["server_cpu_us_per_event"]=round((int(sys.argv[2])/int(sys.argv[3]))*1e6/d["messages"],2); print(json.dumps(d))' \
      "$srv" "$((c1 - c0))" "$(getconf CLK_TCK)" >> "$results"
    node "$here/socketio/load.js" "http://127.0.0.1:$port" ack "$n_ack" | python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); d["server"]=sys.argv[1]; print(json.dumps(d))' "$srv" >> "$results"
  done
done
python3 "$here/report.py" "$results" "$out"
