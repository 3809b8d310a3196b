# C unit tests of single core modules.  Each compiles the sources it tests.
UNIT_TESTS = unit/test_frame unit/test_envelope unit/test_conf unit/test_pattern unit/test_pending unit/test_router unit/test_codec_msgpack
check_PROGRAMS += $(UNIT_TESTS)
TESTS += $(UNIT_TESTS)
unit_test_frame_SOURCES = unit/test_frame.c ../core/frame.c
unit_test_frame_LDADD = $(LIBEVENT_LIBS)
unit_test_envelope_SOURCES = unit/test_envelope.c ../core/envelope.c
unit_test_conf_SOURCES = unit/test_conf.c ../core/conf.c ../core/util.c ../core/names.c
unit_test_conf_LDADD = $(LIBEVENT_LIBS)
unit_test_pattern_SOURCES = unit/test_pattern.c ../core/pattern.c ../core/htable.c ../core/util.c ../core/names.c
unit_test_pattern_LDADD = $(LIBEVENT_LIBS)
unit_test_pending_SOURCES = unit/test_pending.c ../core/pending.c ../core/htable.c ../core/util.c ../core/names.c
unit_test_pending_LDADD = $(LIBEVENT_LIBS)
# The router against a fake transport: every core module but main.c
# (tests/unit/fakebus.c wires them as lexbusd does).
unit_test_router_SOURCES = unit/test_router.c unit/fakebus.c unit/fakebus.h \
	../core/bus.c ../core/settings.c ../core/reload.c ../core/log.c ../core/conf.c \
	../core/plugin_ctx.c ../core/plugin_host.c ../core/api.c ../core/conn.c ../core/listeners.c ../core/local.c \
	../core/frame.c ../core/out.c ../core/msg.c ../core/hooks.c ../core/router.c \
	../core/route_common.c ../core/route_register.c ../core/route_call.c ../core/route_emit.c ../core/subs.c ../core/jsonw.c \
	../core/registry.c ../core/pattern.c ../core/pending.c ../core/htable.c ../core/sysmethod.c \
	../core/system_service.c ../core/stats.c ../core/state.c ../core/state_writer.c ../core/util.c \
	../core/envelope.c ../core/names.c ../core/encoding.c ../core/codec_msgpack.c
unit_test_router_CPPFLAGS = $(AM_CPPFLAGS) -DLB_PLUGINDIR='"/nonexistent"' -DLB_LUADIR='"/nonexistent"' \
	-DLB_BUILD_EXE='"/nonexistent"' -DLB_BUILD_PLUGINDIR='"/nonexistent"' -DLB_BUILD_LUADIR='"/nonexistent"'
unit_test_router_CFLAGS = $(AM_CFLAGS) $(MSGPACK_CFLAGS) -pthread
unit_test_router_LDADD = $(LIBEVENT_LIBS) $(JANSSON_LIBS) $(MSGPACK_LIBS)
unit_test_router_LDFLAGS = -pthread
unit_test_codec_msgpack_SOURCES = unit/test_codec_msgpack.c ../core/codec_msgpack.c ../core/envelope.c
unit_test_codec_msgpack_CFLAGS = $(AM_CFLAGS) $(MSGPACK_CFLAGS) -pthread
