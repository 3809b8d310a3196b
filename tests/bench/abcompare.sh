#!/usr/bin/env bash
# Two lexbusd builds against each other, back to back on this machine:
# both daemons run at once (unix transport only, the same bus.conf), and
# every workload alternates between them round by round, so both see the
# same conditions.  One load generator (lbbench) for both.  For "did this
# change cost anything": before/after tables of a refactor.
#
#   tests/bench/abcompare.sh OLD_LEXBUSD NEW_LEXBUSD [ROUNDS] [--quick]
#
# LBBENCH may point at a prebuilt lbbench; by default the one in
# _build-bench/ (built as run.sh does).  Prints a table of medians (and the
# spread) and the new/old ratio per workload.
set -euo pipefail
top="$(cd "$(dirname "$0")/../.." && pwd)"
(($# >= 2)) || { sed -n '2,12p' "$0"; exit 2; }
old="$(realpath "$1")" new="$(realpath "$2")"
rounds="${3:-5}"
quick=0; [[ "${4:-}" == --quick || "${3:-}" == --quick ]] && { quick=1; [[ "${3:-}" == --quick ]] && rounds=3; }
if [[ -z "${LBBENCH:-}" ]]; then
  bdir="$top/_build-bench"
  if [[ ! -x "$top/configure" ]]; then (cd "$top" && autoreconf -fi >/dev/null); fi
  mkdir -p "$bdir"
  (cd "$bdir" && { [[ -f Makefile ]] || "$top/configure" -q CFLAGS="-O2 -g"; } && make -j"$(nproc)" >/dev/null)
  LBBENCH="$bdir/tests/bench/lbbench"
fi
tmp="$(mktemp -d /tmp/lexbus-ab.XXXXXX)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT INT TERM
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
declare -A pid
for side in old new; do
  printf '[bus]\nnode = ab-%s\nlog_level = warn\n[plugin unix]\npath = %s/%s.sock\n' "$side" "$tmp" "$side" > "$tmp/$side.conf"
  bin="$old"; [[ $side == new ]] && bin="$new"
  "$bin" -c "$tmp/$side.conf" 2>"$tmp/$side.log" & pid[$side]=$!; pids+=($!)
done
for side in old new; do
  for _ in $(seq 100); do [[ -S "$tmp/$side.sock" ]] && break; sleep 0.05; done
  [[ -S "$tmp/$side.sock" ]] || { echo "abcompare: the $side daemon did not start:" >&2; cat "$tmp/$side.log" >&2; exit 1; }
done
if ((quick)); then n=200000 nf=20000 nr=3000; else n=1000000 nf=100000 nr=20000; fi
res="$tmp/results.jsonl"
: > "$res"
one() { # SIDE LABEL ARGS...
  local side=$1 label=$2; shift 2
  "$LBBENCH" lexbus "unix:$tmp/$side.sock" "$@" --server-pid "${pid[$side]}" |
    python3 -c 'import json,sys; [print(json.dumps(dict(json.loads(l), side=sys.argv[1], label=sys.argv[2]))) for l in sys.stdin if l.strip()]' "$side" "$label" >> "$res"
}
echo "abcompare: $rounds rounds, old=$old new=$new" >&2
for r in $(seq "$rounds"); do
  # Alternate which side goes first, so neither always runs on a warmer machine.
  order=(old new); ((r % 2)) || order=(new old)
  for side in "${order[@]}"; do
    for size in 16 128 1024; do one "$side" "1→1 $size B msgs/s" stream "$n" "$size"; done
    one "$side" "1→1 128 B flow-controlled msgs/s" stream "$n" 128 --window 500
    one "$side" "fan-out 50 × 128 B deliveries/s" fanout "$nf" 128 50 --procs 5
    one "$side" "RTT µs" rtt "$nr"
  done
  echo "  round $r done" >&2
done
python3 - "$res" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
lost = [r for r in rows if r.get("lost") or r.get("order_errors")]
labels = list(dict.fromkeys(r["label"] for r in rows))
print("| workload | old (median, min–max) | new (median, min–max) | new/old |")
print("|---|---|---|---|")
def fmt(v):
    return "%.2fM" % (v / 1e6) if v >= 1e6 else "%.0fk" % (v / 1e3) if v >= 1e4 else "%.1f" % v
for lab in labels:
    keys = [("p50_us", "RTT p50 µs"), ("p99_us", "RTT p99 µs")] if lab.startswith("RTT") else [("msgs_per_s", lab)]
    for k, name in keys:
        v = {s: [r[k] for r in rows if r["label"] == lab and r["side"] == s and r.get(k) is not None] for s in ("old", "new")}
        if not v["old"] or not v["new"]:
            continue
        mo, mn = statistics.median(v["old"]), statistics.median(v["new"])
        print("| %s | %s (%s–%s) | %s (%s–%s) | %.2f× |" % (name, fmt(mo), fmt(min(v["old"])), fmt(max(v["old"])),
              fmt(mn), fmt(min(v["new"])), fmt(max(v["new"])), mn / mo if mo else float("nan")))
ns = {s: [r["server_ns_per_msg"] for r in rows if r["side"] == s and r["label"] == "1→1 128 B msgs/s" and r.get("server_ns_per_msg")] for s in ("old", "new")}
if ns["old"] and ns["new"]:
    print("\nlexbusd CPU per 128 B 1→1 message: old %d ns, new %d ns (medians)" % (statistics.median(ns["old"]), statistics.median(ns["new"])))
print("Loss or reordering in %d runs: %s" % (len(rows), "NONE" if not lost else "%d runs" % len(lost)))
PY
