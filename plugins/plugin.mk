# Included by every plugins/<name>/Makefile.am.
# A plugin is a libtool module; its symbols from lexbusd stay undefined
# and are resolved at dlopen() time against the daemon (-export-dynamic).
AM_CPPFLAGS = -I$(top_srcdir)/include -I$(top_builddir)
AM_CFLAGS = $(WARN_CFLAGS) -fvisibility=hidden
lb_plugin_ldflags = -module -avoid-version -shared
pluginsdir = $(pkglibdir)/plugins

# The build tree works without installing: lexbusd looks for
# plugins/<name>/<name>.so, so expose the libtool output there.
all-local: $(plugins_LTLIBRARIES)
	@for so in $(plugins_LTLIBRARIES:.la=.so); do \
	  test -f .libs/$$so && $(LN_S) -f .libs/$$so $$so || true; done
clean-local:
	rm -f $(plugins_LTLIBRARIES:.la=.so)
