#!/usr/bin/env bash
# What the lua plugin costs, in one run:
#   - per message through the real daemon (luarules.py): the same EMIT
#     stream with no plugin, the plugin without scripts, 40 rules none of
#     which selects the traffic, a Lua rule that passes, a Lua rule that
#     edits the payload, a JSONLex transform, a fixed rewrite (the daemon's
#     CPU time per message, medians of interleaved rounds; and, with valgrind
#     at hand, the instructions per message routed, which no other load on
#     the machine changes);
#   - JSONLex over the conformance corpus: in-process evaluations/s
#     (compiled, through the cache, cold) and through the real daemon
#     (lexbus.jsonlex calls, pipelined; and the daemon's own per-evaluation
#     time from `lexbus stats`);
#   - the reference implementation under node, when LEXBUS_JSONLEX_REFERENCE
#     names Exprsn's src/shared/utils/jsonlex.js (not in this repository).
#
#   tests/bench/lua-bench.sh [SECONDS_PER_ITEM] [ROUNDS]
# Builds an optimised, sanitizer-free tree in _build-bench/ (as run.sh does).
set -euo pipefail
top="$(cd "$(dirname "$0")/../.." && pwd)"
secs="${1:-2}"
rounds="${2:-5}"
bdir="$top/_build-bench"
if [[ ! -x "$top/configure" ]]; then (cd "$top" && autoreconf -fi >/dev/null); fi
mkdir -p "$bdir"
(cd "$bdir" && { [[ -f Makefile ]] || "$top/configure" -q CFLAGS="-O2 -g"; } && make -j"$(nproc)" >/dev/null)
cases="$top/tests/lua/jsonlex-cases.jsonl"
echo "== rules per message through the daemon (${secs}s per item, $rounds rounds)"
LEXBUSD="$bdir/core/lexbusd" /usr/bin/python3 "$top/tests/bench/luarules.py" "$secs" "$rounds"
if command -v valgrind >/dev/null && command -v callgrind_annotate >/dev/null; then
  echo "== the same, instructions per message routed (callgrind, exact)"
  LEXBUSD="$bdir/core/lexbusd" /usr/bin/python3 "$top/tests/bench/luarules.py" --callgrind 10000
fi
echo "== JSONLex in-process, luabench (${secs}s per item)"
"$bdir/tests/bench/luabench" "$cases" "$secs"
echo "== JSONLex through the daemon"
LEXBUSD="$bdir/core/lexbusd" PYTHONPATH="$top/tests/integration:$top/tests/lua" /usr/bin/python3 - "$cases" "$secs" <<'PY'
import json, sys, time
import lbtest
from luatest import lua_bus, load_cases
cases = load_cases()
secs = float(sys.argv[2])
# The two cases nested deeper than the bus's frame limit never reach the plugin.
frames = [json.dumps({"type": "CALL", "id": "j%d" % i, "to": "lexbus", "method": "jsonlex",
                      "params": {"expr": c["expr"], "context": c["context"]}}).encode()
          for i, c in enumerate(cases) if not c["name"].startswith("deep/") or not c.get("error")]
batch = b"".join(lbtest.frame(f) for f in frames)
with lua_bus(bus="log_level = info\n") as bus:
    c = bus.client("bench")
    n = 0
    t0 = time.time()
    while time.time() - t0 < secs:
        c.sock.sendall(batch)
        for _ in frames:
            c.recv(30)
        n += len(frames)
    wall = time.time() - t0
    st = bus.stats()["plugins"]["lua"]["jsonlex"]
print(json.dumps({"calls_per_sec_end_to_end": round(n / wall), "daemon_avg_us_per_eval": round(st["avgUs"], 3),
                  "daemon_evals_per_sec": round(1e6 / st["avgUs"]) if st["avgUs"] else None,
                  "cache": st["cache"]}))
PY
echo "== reference (Exprsn jsonlex.js under node)"
if [[ -n "${LEXBUS_JSONLEX_REFERENCE:-}" ]] && command -v node >/dev/null; then
  node "$top/tests/bench/jsonlex-ref.js" "$LEXBUS_JSONLEX_REFERENCE" "$cases" "$secs"
else
  echo '{"reference": "not run: set LEXBUS_JSONLEX_REFERENCE to Exprsn'"'"'s src/shared/utils/jsonlex.js (and have node)"}'
fi
