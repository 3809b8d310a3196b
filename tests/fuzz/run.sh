#!/usr/bin/env bash
# Fuzzes the parsers with libFuzzer (clang), each target for N seconds:
#   tests/fuzz/run.sh [SECONDS]        (default 60)
# New interesting inputs are added to tests/fuzz/corpus/<target>/; a crash
# leaves crash-* in the current directory and exits non-zero.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
top="$(cd "$here/../.." && pwd)"
secs="${1:-60}"
command -v clang >/dev/null || { echo "run.sh: clang is needed (apt-get install clang)" >&2; exit 1; }
out="$(mktemp -d /tmp/lexbus-fuzz.XXXXXX)"
echo '#define _GNU_SOURCE 1' > "$out/config.h"
flags=(-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
       -I"$out" -I"$top/include" -I"$top/core")
clang "${flags[@]}" -o "$out/fuzz_envelope" "$here/fuzz_envelope.c" "$top/core/envelope.c" "$top/core/msg.c" \
  "$top/core/jsonw.c" "$top/core/util.c" "$top/core/names.c" -levent
clang "${flags[@]}" -o "$out/fuzz_conf" "$here/fuzz_conf.c" "$top/core/conf.c" "$top/core/util.c" "$top/core/names.c" -levent
clang "${flags[@]}" -I"$top/client" -o "$out/fuzz_wire" "$here/fuzz_wire.c" "$top/client/wire.c" "$top/core/envelope.c" "$top/core/names.c" -ljansson
clang "${flags[@]}" -o "$out/fuzz_jwtpart" "$here/fuzz_jwtpart.c" -ljansson -lcrypto

clang "${flags[@]}" -o "$out/fuzz_msgpack" "$here/fuzz_msgpack.c" "$top/core/codec_msgpack.c" "$top/core/envelope.c"
ws="$top/plugins/websocket"
clang "${flags[@]}" -I"$ws" -o "$out/fuzz_http" "$here/fuzz_http.c" "$ws/http.c" -lhttp_parser
clang "${flags[@]}" -I"$ws" -o "$out/fuzz_wsframe" "$here/fuzz_wsframe.c" "$ws/wsframe.c" \
  -lwslay -lcrypto -levent
clang "${flags[@]}" -I"$ws" -o "$out/fuzz_sio" "$here/fuzz_sio.c" "$ws/eio.c" "$top/core/envelope.c"
clang "${flags[@]}" -I"$top/plugins/redis" -o "$out/fuzz_redis" "$here/fuzz_redis.c" "$top/plugins/redis/wire.c" \
  "$top/core/envelope.c" "$top/core/names.c" "$top/core/msg.c" "$top/core/jsonw.c" "$top/core/util.c" -ljansson -levent
clang "${flags[@]}" -I"$top/plugins/lua" $(pkg-config --cflags lua5.4) -o "$out/fuzz_lua" "$here/fuzz_lua.c" \
  "$top/plugins/lua/luajson.c" "$top/plugins/lua/jsonlex.c" -ljansson $(pkg-config --libs lua5.4) -lm
clang "${flags[@]}" -I"$top/plugins/common" -o "$out/fuzz_ibuf" "$here/fuzz_ibuf.c" "$top/plugins/common/stream.c" -levent
for t in envelope conf wire jwtpart msgpack http wsframe sio redis lua ibuf; do
  echo "== fuzz_$t for ${secs}s"
  "$out/fuzz_$t" -max_total_time="$secs" -max_len=4096 -timeout=5 "$here/corpus/$t" 2>&1 | tail -3
done
rm -rf "$out"
