#!/usr/bin/env bash
# What a MessagePack connection costs lexbusd next to a JSON one (issue 13's
# target: at most 1.3x), in one run against one optimised, sanitizer-free
# lexbusd (built in _build-bench/ like run.sh's).
#
#   tests/bench/mprun.sh [--quick] [--out FILE.json]
#
# LEXBUSD and MPBENCH may point at prebuilt binaries (a lexbusd copied out of
# its build tree needs LEXBUS_PLUGIN_DIR to find its plugins).
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
[[ -n "${MPBENCH_ONLY:-}" ]] && exit 0
# 1 KiB payloads too: the conversion's per-message part weighs less.
MPBENCH_ONLY=stream MPBENCH_SIZE=1024 "$MPBENCH" "unix:$tmp/lexbus.sock" "$pid" "$((n_stream / 2))" 0 | tee -a "$out"
# The ratios the target is about: lexbusd's CPU per message, MessagePack / JSON.
python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def get(w, e, k, size=128):
    return next(r[k] for r in rows if r["workload"] == w and r["encoding"] == e and r.get("size", 128) == size)
for w, size in (("stream", 128), ("stream", 1024), ("fanout", 128)):
    k = "busd_cpu_ns_per_msg"
    j = get(w, "json", k, size)
    print("%-6s %4d B: lexbusd CPU per message: json %d ns, msgpack %.2fx, json->msgpack %.2fx, msgpack->json %s" % (
        w, size, j, get(w, "msgpack", k, size) / j, get(w, "json->msgpack", k, size) / j,
        "%.2fx" % (get(w, "msgpack->json", k, size) / j) if w == "stream" else "-"))
# Round trips: lexbusd's CPU per call is mostly the kernel's wake-ups (perf), so latency is compared.
j = get("rtt", "json", "p50_us")
print("rtt    p50: json %.1f us, msgpack %.2fx, json->msgpack %.2fx, msgpack->json %.2fx" % (
    j, get("rtt", "msgpack", "p50_us") / j, get("rtt", "json->msgpack", "p50_us") / j, get("rtt", "msgpack->json", "p50_us") / j))
PY
