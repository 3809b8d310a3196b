#!/usr/bin/env bash
# lexbus vs NATS, Redis pub/sub and Mosquitto (MQTT), plus the floor (a bare
# Unix socket), on this machine in one run.  Peers come from Debian's
# packages (scripts/deps.sh --bench installs them) and listen on loopback /
# Unix sockets in a temporary directory; everything is stopped on exit.
#
#   tests/bench/run.sh [--quick] [--out FILE.json] [--only stream|fc|fanout|rtt|idle]
#                      [--window N] [--procs P] [--compare OLD_LBBENCH]
#                      [--with websocket,msgpack,redis,lua | --with all]
#
# --window: how far (messages) the publisher may run ahead of the slowest
# subscriber in the flow-controlled workloads (default 500); --procs: the
# processes the 50 fan-out subscribers are spread over (default 5);
# --compare: also run another lbbench build (e.g. the previous method) on the
# blast and round-trip workloads, interleaved, for a before/after table.
# --with: then, in the same run and against the same build, the transports'
# and plugins' own benchmarks (tests/bench/websocket/run.sh, mprun.sh,
# redis-bench.sh, lua-bench.sh), each into OUT's name with .PART.json (.txt
# for lua), and their summaries under "parts" in OUT.
# LEXBUSD, LBBENCH (and LBCLIENT) may point at prebuilt binaries; by default an
# optimised, sanitizer-free build is made in _build-bench/.
set -euo pipefail
top="$(cd "$(dirname "$0")/../.." && pwd)"
quick=0
only=""
window=500
procs=5
compare=""
with=""
out="$top/bench-results.json"
while (($#)); do
  case "$1" in
    --quick) quick=1 ;;
    --out) out="$2"; shift ;;
    --only) only="$2"; shift ;;
    --window) window="$2"; shift ;;
    --procs) procs="$2"; shift ;;
    --compare) compare="$(realpath "$2")"; shift ;;
    --with) with="$2"; shift ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

for tool in nats-server redis-server mosquitto python3; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool not found: run scripts/deps.sh --bench" >&2; exit 1; }
done

if [[ -z "${LEXBUSD:-}" || -z "${LBBENCH:-}" ]]; then
  bdir="$top/_build-bench"
  if [[ ! -x "$top/configure" ]]; then "$top/autogen.sh" >/dev/null; fi
  mkdir -p "$bdir"
  (cd "$bdir" && { [[ -f Makefile ]] || "$top/configure" -q CFLAGS="-O2 -g"; } && make -j"$(nproc)" >/dev/null)
  LEXBUSD="$bdir/core/lexbusd"
  LBBENCH="$bdir/tests/bench/lbbench"
  LBCLIENT="$bdir/tests/bench/lbclient"
fi
LBCLIENT="${LBCLIENT:-$(dirname "$LBBENCH")/lbclient}"

tmp="$(mktemp -d /tmp/lexbus-bench.XXXXXX)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_path() { for _ in $(seq 100); do [[ -S "$1" ]] && return 0; sleep 0.05; done; echo "run.sh: $1 never appeared" >&2; exit 1; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "run.sh: port $1 never opened" >&2; exit 1; }

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# lexbus over TLS too (the tls-tcp transport, certificates from gen-certs.sh).
"$top/scripts/gen-certs.sh" --out "$tmp/certs" >/dev/null
tls_port=$(free_port)
printf '[bus]\nnode = bench\nlog_level = warn\n[plugin unix]\npath = %s/lexbus.sock\n[plugin tls-tcp]\nlisten = 127.0.0.1:%s\ncert = %s/certs/localhost-cert.pem\nkey = %s/certs/localhost-key.pem\n' \
  "$tmp" "$tls_port" "$tmp" "$tmp" > "$tmp/bus.conf"
"$LEXBUSD" -c "$tmp/bus.conf" 2>"$tmp/lexbusd.log" & lexbus_pid=$!; pids+=($lexbus_pid)
nats_port=$(free_port)
nats-server -a 127.0.0.1 -p "$nats_port" >"$tmp/nats.log" 2>&1 & nats_pid=$!; pids+=($nats_pid)
redis-server --port 0 --unixsocket "$tmp/redis.sock" --save '' --appendonly no >"$tmp/redis.log" 2>&1 & redis_pid=$!; pids+=($redis_pid)
# As root, mosquitto drops to its own user, which could not bind in $tmp.
# max_queued_messages 0: no per-client cap (default 1000), else QoS 0
# messages are dropped under a full window and the run is not lossless.
printf 'listener 0 %s/mqtt.sock\nallow_anonymous true\nmax_queued_messages 0\n%s' "$tmp" "$( [[ $(id -u) -eq 0 ]] && echo 'user root' )" > "$tmp/mosquitto.conf"
mosquitto -c "$tmp/mosquitto.conf" >"$tmp/mqtt.log" 2>&1 & mqtt_pid=$!; pids+=($mqtt_pid)
wait_path "$tmp/lexbus.sock"; wait_path "$tmp/redis.sock"; wait_path "$tmp/mqtt.sock"; wait_port "$nats_port"

declare -A addr=(
  [lexbus]="unix:$tmp/lexbus.sock" [nats]="tcp:127.0.0.1:$nats_port"
  [redis]="unix:$tmp/redis.sock" [mqtt]="unix:$tmp/mqtt.sock" [floor]="none" [relay]="none"
  [lexbus-tls]="tcp:127.0.0.1:$tls_port"
)
# The broker behind each peer, for its CPU time and for pinning.
declare -A spid=([lexbus]=$lexbus_pid [lexbus-tls]=$lexbus_pid [nats]=$nats_pid [redis]=$redis_pid [mqtt]=$mqtt_pid)
if ((quick)); then n_stream=100000; n_rtt=2000; n_fan=10000; n_idle=1000; rounds=1
else n_stream=1000000; n_rtt=20000; n_fan=100000; n_idle=10000; rounds=3; fi
all_cpus="0-$(($(nproc) - 1))"

results="$tmp/results.jsonl"
: > "$results"
# run PEER WORKLOAD ARGS...: one lbbench run, its broker's CPU measured.
run() {
  local p="$1"; shift
  local sp=(); [[ -n "${spid[$p]:-}" ]] && sp=(--server-pid "${spid[$p]}")
  echo "  $p $*" >&2
  "$LBBENCH" "$p" "${addr[$p]}" "$@" "${sp[@]}" | tee -a "$results" >/dev/null
}
# The same through the --compare build (it takes no options), tagged "method":"old".
run_old() {
  [[ -n "$compare" ]] || return 0
  local p="$1"; shift
  echo "  (old) $p $*" >&2
  "$compare" "$p" "${addr[$p]}" "$@" | sed 's/^{/{"method":"old",/' | tee -a "$results" >/dev/null
}
# Broker and both clients on CPU 0: the software path without cross-CPU wake-ups.
run_pinned() {
  local p="$1"; shift
  [[ -n "${spid[$p]:-}" ]] && taskset -a -pc 0 "${spid[$p]}" >/dev/null
  local sp=(); [[ -n "${spid[$p]:-}" ]] && sp=(--server-pid "${spid[$p]}")
  echo "  (pinned) $p $*" >&2
  taskset -c 0 "$LBBENCH" "$p" "${addr[$p]}" "$@" "${sp[@]}" | tee -a "$results" >/dev/null
  [[ -n "${spid[$p]:-}" ]] && taskset -a -pc "$all_cpus" "${spid[$p]}" >/dev/null
  return 0
}
runc() { echo "  lbclient $*" >&2; "$LBCLIENT" "${addr[lexbus]}" "$@" --server-pid "$lexbus_pid" | tee -a "$results" >/dev/null; }
echo "running (this takes a few minutes; --quick for a smoke run)" >&2
want() { [[ -z "$only" || "$only" == "$1" ]]; }
# Memory per idle connection first, on the fresh daemon: after the other
# workloads its heap keeps freed memory (M_TRIM_THRESHOLD) that new
# connections would reuse, and the figure would read 0.
if want idle; then
  rss_start=$(awk '/VmRSS/ {print $2}' /proc/$lexbus_pid/status)
  run lexbus idle "$n_idle" "$lexbus_pid"
fi
# Throughput: $rounds rounds, each running every workload on every peer in
# turn, so a burst of other load on the shared machine hits one round of
# each, not all of one peer; the report takes the median round.  Mosquitto
# is ten times slower than the rest: it gets a fifth of the messages.
m() { [[ $1 == mqtt ]] && echo $(($2 / 5)) || echo "$2"; }
for round in $(seq "$rounds"); do
  echo " throughput round $round of $rounds" >&2
  want stream && for size in 16 128 1024; do
    for p in lexbus lexbus-tls nats redis mqtt floor; do
      run "$p" stream "$(m $p "$n_stream")" "$size"
      [[ $p == lexbus-tls ]] || run_old "$p" stream "$(m $p "$n_stream")" "$size"
    done
  done
  # Flow-controlled: the publisher at most $window messages ahead of the slowest subscriber.
  want fc && for p in lexbus nats redis mqtt floor; do run "$p" stream "$(m $p "$n_stream")" 128 --window "$window"; done
  want fanout && for p in lexbus nats redis mqtt; do
    run "$p" fanout "$(m $p "$n_fan")" 128 50 --procs "$procs"
    run_old "$p" fanout "$(m $p "$n_fan")" 128 50
  done
  want fc && for p in lexbus nats redis mqtt; do run "$p" fanout "$(m $p "$n_fan")" 128 50 --procs "$procs" --window "$window"; done
  # The same 1->1 stream through the C client library (what an application gets).
  want stream && { runc stream "$n_stream" 128; runc stream-raw "$n_stream" 128; }
done
# Wake-up latency on a VM drifts over minutes: interleave rounds across the
# peers so each sees the same conditions; the report takes the median round.
want rtt && for round in 1 2 3 4 5; do
  for p in lexbus lexbus-tls nats redis mqtt floor relay; do
    run "$p" rtt "$((n_rtt / 5))"
    [[ $p == lexbus-tls ]] || run_old "$p" rtt "$((n_rtt / 5))"
    [[ $p == lexbus-tls ]] || run_pinned "$p" rtt "$((n_rtt / 5))"
  done
  runc rtt "$((n_rtt / 5))"
done
if want idle; then
# Growth check: RSS after another full 1→1 run must not have grown.
"$LBBENCH" lexbus "${addr[lexbus]}" stream "$n_stream" 128 >/dev/null
rss_a=$(awk '/VmRSS/ {print $2}' /proc/$lexbus_pid/status)
"$LBBENCH" lexbus "${addr[lexbus]}" stream "$n_stream" 128 >/dev/null
rss_b=$(awk '/VmRSS/ {print $2}' /proc/$lexbus_pid/status)
echo "{\"peer\":\"lexbus\",\"workload\":\"growth\",\"rss_start_kib\":$rss_start,\"rss_after_run_kib\":$rss_a,\"rss_after_second_run_kib\":$rss_b}" >> "$results"
fi

python3 "$top/tests/bench/report.py" "$results" "$out" "$quick" "$window" ||
  { cp "$results" "$out.jsonl"; echo "run.sh: report failed; raw results in $out.jsonl" >&2; exit 1; }

# ---- the parts' own benchmarks, same run, same build ----
[[ $with == all ]] && with=websocket,msgpack,redis,lua
bindir="$(dirname "$LBBENCH")"
base="${out%.json}"
q=(); ((quick)) && q=(--quick)
for part in ${with//,/ }; do
  echo "== part: $part" >&2
  case $part in
    websocket) LEXBUSD="$LEXBUSD" WSBENCH="$bindir/wsbench" "$top/tests/bench/websocket/run.sh" "${q[@]}" --out "$base.websocket.json" ;;
    msgpack) LEXBUSD="$LEXBUSD" MPBENCH="$bindir/mpbench" "$top/tests/bench/mprun.sh" "${q[@]}" --out "$base.msgpack.json" ;;
    redis) LEXBUSD="$LEXBUSD" REDISBENCH="$bindir/redisbench" "$top/tests/bench/redis-bench.sh" "${q[@]}" --out "$base.redis.json" ;;
    lua) if ((quick)); then "$top/tests/bench/lua-bench.sh" 1 3; else "$top/tests/bench/lua-bench.sh"; fi | tee "$base.lua.txt" ;;
    *) echo "run.sh: --with: unknown part $part (websocket, msgpack, redis, lua)" >&2; exit 2 ;;
  esac
done
[[ -z $with ]] || python3 - "$out" "$base" ${with//,/ } <<'PY'
import json, sys
out, base, parts = sys.argv[1], sys.argv[2], sys.argv[3:]
d = json.load(open(out))
d["parts"] = {}
for p in parts:
    try:
        with open("%s.%s.json" % (base, p)) as f:
            v = json.load(f)
        d["parts"][p] = v.get("summary", v)
    except (OSError, ValueError):
        d["parts"][p] = {"output": "%s.%s.%s" % (base, p, "txt" if p == "lua" else "json")}
json.dump(d, open(out, "w"), indent=1)
PY
