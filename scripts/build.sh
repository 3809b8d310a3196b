#!/usr/bin/env bash
# Configures and builds lexbus in _build/ (out of the source tree).
#   scripts/build.sh [configure options...]
set -euo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"
cd "$top"
# (A configure generated before autogen.sh patched its 'rm -f core' is regenerated too.)
if [[ ! -x configure || configure.ac -nt configure ]] || grep -q 'rm -f core' configure; then
  ./autogen.sh >/dev/null
fi
# An in-tree ./configure (the README's classic way) leaves config.status
# here, and configure refuses to build elsewhere from a configured tree.
if [[ -f config.status ]]; then
  echo "build.sh: $top is configured in place (./configure there); building in _build/ needs a clean" \
       "source tree, so running 'make distclean' in $top (to build in place again: ./configure && make)" >&2
  if ! { [[ -f Makefile ]] && make -s distclean >/dev/null; }; then
    echo "build.sh: 'make distclean' failed in $top: remove config.status and the generated Makefiles there" >&2
    exit 1
  fi
fi
mkdir -p _build
cd _build
if [[ ! -f Makefile || ../configure -nt Makefile || -n "${*:-}" ]]; then
  ../configure -q "$@"
fi
make -j"$(nproc)" >/dev/null
echo "build: ok ($top/_build)"
