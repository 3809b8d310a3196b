#!/usr/bin/env bash
# What a MessagePack connection costs lexbusd next to a JSON one (issue 13's
# target: at most 1.3x), in one run against one optimised, sanitizer-free
# lexbusd (built in _build-bench/ like run.sh's).
#
#   tests/bench/mprun.sh [--quick] [--out FILE.json]
#
# LEXBUSD and MPBENCH may point at prebuilt binaries.
set -euo pipefail
top="$(cd "$(dirname "$0")/../.." && pwd)"
n_stream=1000000 n_rtt=30000 out="$top/mpbench-results.json"
while (($#)); do
  case "$1" in
    --quick) n_stream=100000 n_rtt=3000 ;;
    --out) out="$2"; shift ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "mprun.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
if [[ -z "${LEXBUSD:-}" || -z "${MPBENCH:-}" ]]; then
  bdir="$top/_build-bench"
  if [[ ! -x "$top/configure" ]]; then (cd "$top" && autoreconf -fi >/dev/null); fi
  mkdir -p "$bdir"
  (cd "$bdir" && { [[ -f Makefile ]] || "$top/configure" -q CFLAGS="-O2 -g"; } && make -j"$(nproc)" >/dev/null)
  LEXBUSD="$bdir/core/lexbusd"
  MPBENCH="$bdir/tests/bench/mpbench"
fi
tmp="$(mktemp -d /tmp/lexbus-mpbench.XXXXXX)"
pid=
cleanup() { [[ -n "$pid" ]] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT INT TERM
printf '[bus]\nnode = bench\nlog_level = warn\n[plugin unix]\npath = %s/lexbus.sock\n' "$tmp" > "$tmp/bus.conf"
"$LEXBUSD" -c "$tmp/bus.conf" 2>"$tmp/lexbusd.log" & pid=$!
for _ in $(seq 100); do [[ -S "$tmp/lexbus.sock" ]] && break; sleep 0.05; done
"$MPBENCH" "unix:$tmp/lexbus.sock" "$pid" "$n_stream" "$n_rtt" | tee "$out"
# The ratios the target is about: lexbusd's CPU per message, MessagePack / JSON.
python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def get(w, e, k):
    return next(r[k] for r in rows if r["workload"] == w and r["encoding"] == e)
for w, k in (("stream", "busd_cpu_ns_per_msg"), ("fanout", "busd_cpu_ns_per_msg"), ("rtt", "busd_cpu_ns_per_call")):
    j = get(w, "json", k)
    print("%-6s lexbusd CPU per message: json %d ns, msgpack %.2fx, json->msgpack %.2fx" % (
        w, j, get(w, "msgpack", k) / j, get(w, "json->msgpack", k) / j))
PY
