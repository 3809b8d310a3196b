#!/usr/bin/env bash
# Sets up lexbus on a fresh Debian machine, builds it with AddressSanitizer
# and UBSan, runs every test (`make check`: unit, integration, fuzz corpus)
# and ends with one line "N passed, N failed".
set -uo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"
# A failed set-up still ends with the totals line CI reads.
"$top/scripts/deps.sh" || { echo "test.sh: installing dependencies failed"; echo "0 passed, 1 failed"; exit 1; }
"$top/scripts/build.sh" --enable-sanitizers || { echo "test.sh: the build failed"; echo "0 passed, 1 failed"; exit 1; }
cd "$top/_build"
# Many-connection tests need descriptors.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
make -j"$(nproc)" check >check.out 2>&1
rc=$?
grep -E '^(PASS|FAIL|ERROR|XPASS|SKIP):' check.out | grep -v '^PASS:' || true
count() { sed -n "s/^# $1: *\([0-9]*\)\$/\1/p" check.out | awk '{s+=$1} END {print s+0}'; }
pass=$(count PASS); fail=$(count FAIL); error=$(count ERROR); xpass=$(count XPASS); skip=$(count SKIP)
failed=$((fail + error + xpass))
if ((rc != 0 && failed == 0)); then
  # The harness itself failed (a build error in check_PROGRAMS, say).
  tail -40 check.out
  failed=1
fi
if ((failed > 0)); then
  # test-suite.log holds the full output of every failing test.
  find . -name test-suite.log -exec tail -n 150 {} \;
fi
if ((skip > 0)); then
  echo "$pass passed, $failed failed, $skip skipped"
else
  echo "$pass passed, $failed failed"
fi
((failed == 0))
