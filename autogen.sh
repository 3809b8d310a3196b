#!/bin/sh
# Regenerates configure and Makefile.in from configure.ac / Makefile.am.
set -e
cd "$(dirname "$0")"
autoreconf -fi
# core/ shares its name with a core dump: autoconf's compile checks and its
# exit trap run `rm -f core ...` in the build directory, where core/ is a
# directory.  That prints "rm: cannot remove 'core': Is a directory" (once
# per check on a re-configure) and, in the exit trap, stops the cleanup
# that follows (confdefs.h is left behind).  Where core/ is a directory no
# core dump can be named core, so the generated configure stops trying.
sed -e 's/rm -f core conftest/rm -f conftest/' -e 's/rm -f core \*\.core/rm -f *.core/' configure > configure.tmp
cat configure.tmp > configure   # keeps configure's mode
rm -f configure.tmp
if grep -q 'rm -f core' configure; then
  echo "autogen.sh: configure still removes 'core' somewhere: check the patterns above" >&2
  exit 1
fi
