# liblexbus and the lexbus CLI against the real daemon.
check_PROGRAMS += client/lbdemo
client_lbdemo_SOURCES = client/lbdemo.c
client_lbdemo_LDADD = $(top_builddir)/client/liblexbus.la $(LIBEVENT_LIBS) $(JANSSON_LIBS)
check_PROGRAMS += client/test_backoff
TESTS += client/test_backoff
client_test_backoff_SOURCES = client/test_backoff.c
client_test_backoff_LDADD = $(top_builddir)/client/liblexbus.la $(LIBEVENT_LIBS) $(JANSSON_LIBS)
TESTS += client/test_client.py client/test_cli.py
EXTRA_DIST += client/test_client.py client/test_cli.py
