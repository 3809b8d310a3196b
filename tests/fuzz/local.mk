# The fuzz corpus, replayed through the parsers as regression tests.
# Fuzzing proper: tests/fuzz/run.sh (libFuzzer).
check_PROGRAMS += fuzz/replay_envelope fuzz/replay_conf fuzz/replay_wire fuzz/replay_jwtpart fuzz/replay_msgpack fuzz/replay_redis
TESTS += fuzz/replay_envelope fuzz/replay_conf fuzz/replay_wire fuzz/replay_jwtpart fuzz/replay_msgpack fuzz/replay_redis
fuzz_replay_envelope_SOURCES = fuzz/replay.c fuzz/fuzz_envelope.c ../core/envelope.c ../core/msg.c ../core/jsonw.c \
	../core/util.c ../core/names.c
fuzz_replay_envelope_LDADD = $(LIBEVENT_LIBS)
fuzz_replay_envelope_CPPFLAGS = $(AM_CPPFLAGS) -DCORPUS_DIR='"$(abs_srcdir)/fuzz/corpus/envelope"'
fuzz_replay_conf_SOURCES = fuzz/replay.c fuzz/fuzz_conf.c ../core/conf.c ../core/util.c ../core/names.c
fuzz_replay_conf_CPPFLAGS = $(AM_CPPFLAGS) -DCORPUS_DIR='"$(abs_srcdir)/fuzz/corpus/conf"'
fuzz_replay_conf_LDADD = $(LIBEVENT_LIBS)
fuzz_replay_wire_SOURCES = fuzz/replay.c fuzz/fuzz_wire.c ../client/wire.c ../core/envelope.c ../core/names.c
fuzz_replay_wire_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/client -DCORPUS_DIR='"$(abs_srcdir)/fuzz/corpus/wire"'
fuzz_replay_wire_LDADD = $(JANSSON_LIBS)
fuzz_replay_jwtpart_SOURCES = fuzz/replay.c fuzz/fuzz_jwtpart.c
fuzz_replay_jwtpart_CPPFLAGS = $(AM_CPPFLAGS) -DCORPUS_DIR='"$(abs_srcdir)/fuzz/corpus/jwtpart"'
fuzz_replay_jwtpart_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS) $(OPENSSL_CFLAGS)
fuzz_replay_jwtpart_LDADD = $(JANSSON_LIBS) $(OPENSSL_LIBS)
fuzz_replay_msgpack_SOURCES = fuzz/replay.c fuzz/fuzz_msgpack.c ../core/codec_msgpack.c ../core/envelope.c ../core/names.c
fuzz_replay_msgpack_CPPFLAGS = $(AM_CPPFLAGS) $(MSGPACK_CFLAGS) -DCORPUS_DIR='"$(abs_srcdir)/fuzz/corpus/msgpack"'
fuzz_replay_redis_SOURCES = fuzz/replay.c fuzz/fuzz_redis.c ../plugins/redis/wire.c ../core/envelope.c ../core/names.c \
	../core/msg.c ../core/jsonw.c ../core/util.c
fuzz_replay_redis_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/plugins/redis -DCORPUS_DIR='"$(abs_srcdir)/fuzz/corpus/redis"'
fuzz_replay_redis_LDADD = $(JANSSON_LIBS) $(LIBEVENT_LIBS)
# The stream transports' input buffer (plugins/common/stream.c).
check_PROGRAMS += fuzz/replay_ibuf
TESTS += fuzz/replay_ibuf
fuzz_replay_ibuf_SOURCES = fuzz/replay.c fuzz/fuzz_ibuf.c ../plugins/common/stream.c
fuzz_replay_ibuf_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/plugins/common -DCORPUS_DIR='"$(abs_srcdir)/fuzz/corpus/ibuf"'
fuzz_replay_ibuf_LDADD = $(LIBEVENT_LIBS)
check_PROGRAMS += fuzz/replay_lua
TESTS += fuzz/replay_lua
fuzz_replay_lua_SOURCES = fuzz/replay.c fuzz/fuzz_lua.c ../plugins/lua/luajson.c ../plugins/lua/jsonlex.c
fuzz_replay_lua_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/plugins/lua $(LUA_CFLAGS) -DCORPUS_DIR='"$(abs_srcdir)/fuzz/corpus/lua"'
fuzz_replay_lua_LDADD = $(JANSSON_LIBS) $(LUA_LIBS) -lm
EXTRA_DIST += fuzz/run.sh fuzz/corpus
# The websocket plugin's parsers: HTTP requests, WebSocket frames, Engine.IO/Socket.IO.
WS_FUZZ_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/plugins/websocket
check_PROGRAMS += fuzz/replay_http fuzz/replay_wsframe fuzz/replay_sio
TESTS += fuzz/replay_http fuzz/replay_wsframe fuzz/replay_sio
fuzz_replay_http_SOURCES = fuzz/replay.c fuzz/fuzz_http.c ../plugins/websocket/http.c
fuzz_replay_http_CPPFLAGS = $(WS_FUZZ_CPPFLAGS) -DCORPUS_DIR='"$(abs_srcdir)/fuzz/corpus/http"'
fuzz_replay_http_LDADD = $(HTTP_PARSER_LIBS)
fuzz_replay_wsframe_SOURCES = fuzz/replay.c fuzz/fuzz_wsframe.c ../plugins/websocket/wsframe.c
fuzz_replay_wsframe_CPPFLAGS = $(WS_FUZZ_CPPFLAGS) -DCORPUS_DIR='"$(abs_srcdir)/fuzz/corpus/wsframe"'
fuzz_replay_wsframe_LDADD = $(WSLAY_LIBS) $(OPENSSL_LIBS) $(LIBEVENT_LIBS)
fuzz_replay_sio_SOURCES = fuzz/replay.c fuzz/fuzz_sio.c ../plugins/websocket/eio.c ../core/envelope.c
fuzz_replay_sio_CPPFLAGS = $(WS_FUZZ_CPPFLAGS) -DCORPUS_DIR='"$(abs_srcdir)/fuzz/corpus/sio"'
