"""The build as the README has people run it, in a copy of the source tree:
./autogen.sh and an in-tree ./configure, then scripts/build.sh (what
scripts/test.sh runs), which must cope with the configured tree."""
import os
import shutil
import subprocess
import tempfile

import lbtest
from lbtest import SRCDIR, check, check_eq, test

RM_CORE = "cannot remove 'core'"


def source_copy():
    """The checkout's files as they are now (committed or not), without any
    build output; a source tree that git does not list (a `make distcheck`
    tree, unpacked inside the checkout's ignored build folder) is copied
    whole: it holds nothing else."""
    r = subprocess.run(["git", "-C", SRCDIR, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                       capture_output=True)
    files = r.stdout.decode().split("\0") if r.returncode == 0 else []
    d = tempfile.mkdtemp(prefix="lexbus-build-")
    if "autogen.sh" not in files:
        if not os.path.exists(os.path.join(SRCDIR, "autogen.sh")):
            raise lbtest.Skip("no source tree to copy at %s" % SRCDIR)
        shutil.rmtree(d)
        shutil.copytree(SRCDIR, d, ignore=shutil.ignore_patterns("_build*", "_inst"))
        for root, dirs, names in os.walk(d):   # distcheck unpacks read-only
            os.chmod(root, 0o755)
            for n in names:
                os.chmod(os.path.join(root, n), 0o644 | (os.stat(os.path.join(root, n)).st_mode & 0o111))
        return d
    for f in files:
        src = os.path.join(SRCDIR, f)
        if f and os.path.isfile(src):
            os.makedirs(os.path.dirname(os.path.join(d, f)), exist_ok=True)
            shutil.copy2(src, os.path.join(d, f))
    return d


def run(cwd, *cmd, timeout=900):
    return subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True, timeout=timeout)


@test
def autogen_configure_in_tree_then_build_sh():
    top = source_copy()
    try:
        r = run(top, "./autogen.sh")
        check_eq(r.returncode, 0, "autogen.sh: %s" % r.stderr[-2000:])
        r = run(top, "./configure", "-q")
        check_eq(r.returncode, 0, "in-tree configure: %s" % r.stderr[-2000:])
        check(RM_CORE not in r.stderr, "configure tries to rm the core/ directory: %r" % r.stderr[-500:])
        check(not os.path.exists(os.path.join(top, "confdefs.h")), "configure cleaned up after itself")
        r = run(top, "scripts/build.sh")
        check_eq(r.returncode, 0, "build.sh after an in-tree configure: %s" % (r.stdout + r.stderr)[-3000:])
        check("is configured in place" in r.stderr and "make distclean" in r.stderr, "and says why: %r" % r.stderr)
        check(RM_CORE not in r.stderr + r.stdout, "no rm errors: %r" % r.stderr[-500:])
        check(not os.path.exists(os.path.join(top, "config.status")), "the tree is clean again")
        v = run(top, os.path.join("_build", "core", "lexbusd"), "-v")
        check(v.returncode == 0 and v.stdout.startswith("lexbusd "), "the daemon was built: %r" % (v,))
        # A re-configure (test.sh passes options every time) runs every check
        # with _build/core/ present.
        r = run(os.path.join(top, "_build"), "../configure", "-q")
        check_eq(r.returncode, 0, "re-configure: %s" % r.stderr[-2000:])
        check(RM_CORE not in r.stderr, "re-configure tries to rm core/: %d times" % r.stderr.count(RM_CORE))
        check(not os.path.exists(os.path.join(top, "_build", "confdefs.h")), "no confdefs.h left in _build")
    finally:
        shutil.rmtree(top, ignore_errors=True)


lbtest.main()
