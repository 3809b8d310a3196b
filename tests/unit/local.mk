# C unit tests of single core modules.  Each compiles the sources it tests.
UNIT_TESTS = unit/test_frame unit/test_envelope unit/test_conf unit/test_pattern unit/test_pending unit/test_codec_msgpack
check_PROGRAMS += $(UNIT_TESTS)
TESTS += $(UNIT_TESTS)
unit_test_frame_SOURCES = unit/test_frame.c ../core/frame.c
unit_test_frame_LDADD = $(LIBEVENT_LIBS)
unit_test_envelope_SOURCES = unit/test_envelope.c ../core/envelope.c
unit_test_conf_SOURCES = unit/test_conf.c ../core/conf.c ../core/util.c
unit_test_conf_LDADD = $(LIBEVENT_LIBS)
unit_test_pattern_SOURCES = unit/test_pattern.c ../core/pattern.c ../core/htable.c ../core/util.c
unit_test_pattern_LDADD = $(LIBEVENT_LIBS)
unit_test_pending_SOURCES = unit/test_pending.c ../core/pending.c ../core/htable.c ../core/util.c
unit_test_pending_LDADD = $(LIBEVENT_LIBS)
unit_test_codec_msgpack_SOURCES = unit/test_codec_msgpack.c ../core/codec_msgpack.c ../core/envelope.c
unit_test_codec_msgpack_CFLAGS = $(AM_CFLAGS) $(MSGPACK_CFLAGS) -pthread
