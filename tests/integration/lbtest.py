"""lbtest: the integration-test harness for lexbus.

Every test starts the real lexbusd with a real bus.conf in a temporary
directory and talks to it over real sockets.  Tests print TAP (the automake
tap-driver counts them).

    import lbtest
    from lbtest import test, check, Bus

    @test
    def call_roundtrip():
        with Bus() as bus:
            a = bus.client("svc-a", methods=["echo"])
            ...

    lbtest.main()

Environment (set by tests/Makefile.am; defaults work from a build tree):
    LEXBUSD       path to the daemon
    LEXBUS_CLI    path to the `lexbus` command-line tool
    LEXBUS_BUILDDIR, LEXBUS_SRCDIR
"""
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.environ.get("LEXBUS_SRCDIR", os.path.abspath(os.path.join(HERE, "..", "..")))
BUILDDIR = os.environ.get("LEXBUS_BUILDDIR", SRCDIR)
LEXBUSD = os.environ.get("LEXBUSD", os.path.join(BUILDDIR, "core", "lexbusd"))
LEXBUS_CLI = os.environ.get("LEXBUS_CLI", os.path.join(BUILDDIR, "client", "lexbus"))


class TestFailure(AssertionError):
    pass


class Skip(Exception):
    """raise Skip("why"): the test cannot run here; TAP counts it as skipped, never as passed."""


def check(cond, msg="check failed"):
    if not cond:
        raise TestFailure(msg)


def check_eq(got, want, what="value"):
    if got != want:
        raise TestFailure("%s: got %r, want %r" % (what, got, want))


def wait_for(pred, timeout=5.0, step=0.02, what="condition"):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise TestFailure("timed out after %.1fs waiting for %s" % (timeout, what))


# ---------------------------------------------------------------- wire

def frame(obj):
    """One wire frame: 4-byte big-endian length + JSON (or raw bytes)."""
    body = obj if isinstance(obj, (bytes, bytearray)) else json.dumps(obj).encode()
    return struct.pack(">I", len(body)) + body


class Closed(Exception):
    pass


class RawClient:
    """A client that speaks the raw wire protocol over a stream socket.
    Bodies are JSON; a subclass may set encode/decode (tests/msgpack)."""

    encode = staticmethod(lambda obj: json.dumps(obj).encode())
    decode = staticmethod(json.loads)

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.name = None

    @classmethod
    def unix(cls, path, timeout=5.0):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(path)
        return cls(s)

    def send(self, obj):
        body = obj if isinstance(obj, (bytes, bytearray)) else self.encode(obj)
        self.sock.sendall(struct.pack(">I", len(body)) + body)

    def send_raw(self, data):
        self.sock.sendall(data)

    def _fill(self, n, timeout):
        self.sock.settimeout(timeout)
        while len(self.buf) < n:
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise TestFailure("no frame within %.1fs" % timeout)
            except (ConnectionResetError, BrokenPipeError):
                raise Closed()
            if not chunk:
                raise Closed()
            self.buf += chunk

    def recv(self, timeout=5.0):
        """The next frame as a dict (raises Closed at EOF)."""
        self._fill(4, timeout)
        (n,) = struct.unpack(">I", self.buf[:4])
        self._fill(4 + n, timeout)
        body, self.buf = self.buf[4:4 + n], self.buf[4 + n:]
        self.last_body = body
        return self.decode(body)

    def recv_type(self, mtype, timeout=5.0):
        """Skips frames until one of type `mtype` arrives."""
        end = time.time() + timeout
        while True:
            left = end - time.time()
            if left <= 0:
                raise TestFailure("no %s within %.1fs" % (mtype, timeout))
            m = self.recv(left)
            if m.get("type") == mtype:
                return m

    def expect_nothing(self, wait=0.3):
        """Checks that no frame arrives within `wait` seconds."""
        try:
            m = self.recv(wait)
        except TestFailure:
            return
        except Closed:
            raise TestFailure("connection closed, expected it to stay open and silent")
        raise TestFailure("unexpected frame: %r" % (m,))

    def expect_closed(self, timeout=5.0):
        """Reads (and returns) frames until the bus closes the connection."""
        got = []
        end = time.time() + timeout
        while time.time() < end:
            try:
                got.append(self.recv(max(0.05, end - time.time())))
            except Closed:
                return got
            except TestFailure:
                break
        raise TestFailure("connection still open after %.1fs (got %r)" % (timeout, got))

    def register(self, name, methods=None, subscribe=None, token=None, **extra):
        msg = {"type": "REGISTER", "serviceName": name, "methods": methods or [], "version": "1.0.0",
               "metadata": {"pid": os.getpid(), "hostname": socket.gethostname()}}
        if subscribe:
            msg["subscribe"] = subscribe
        if token:
            msg["token"] = token
        msg.update(extra)
        self.send(msg)
        ack = self.recv()
        if ack.get("type") == "REGISTER_ACK":
            self.name = name
        return ack

    _seq = 0

    def call(self, to, method, params=None, timeout=5.0, **extra):
        RawClient._seq += 1
        cid = "req-%d-%d" % (os.getpid(), RawClient._seq)
        msg = {"type": "CALL", "id": cid, "to": to, "method": method, "params": params or {}}
        msg.update(extra)
        self.send(msg)
        end = time.time() + timeout
        while True:
            m = self.recv(max(0.05, end - time.time()))
            if m.get("type") in ("RESPONSE", "ERROR") and m.get("id") == cid:
                return m

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# ---------------------------------------------------------------- daemon

class Bus:
    """A real lexbusd with a generated bus.conf in a temporary directory.

    bus:      extra lines for [bus] (string)
    plugins:  extra config text appended after [plugin unix] (string)
    """

    def __init__(self, bus="", plugins="", unix=True, start=True, heartbeat="30s",
                 call_timeout="5s", env=None, preexec=None):
        self.dir = tempfile.mkdtemp(prefix="lexbus-test-")
        self.sock = os.path.join(self.dir, "bus.sock")
        self.conf = os.path.join(self.dir, "bus.conf")
        self.logpath = os.path.join(self.dir, "lexbusd.log")
        self.proc = None
        self.env = env
        self.preexec = preexec          # run in the daemon's process before exec (limits)
        self.clients = []
        text = "[bus]\nnode = test-node\n"
        if "log_level" not in bus:
            text += "log_level = debug\n"
        text += "heartbeat = %s\ncall_timeout = %s\n%s\n" % (heartbeat, call_timeout, bus)
        if unix:
            text += "[plugin unix]\npath = %s\n" % self.sock
        text += plugins
        self.write_conf(text)
        if start:
            self.start()

    def write_conf(self, text):
        with open(self.conf, "w") as f:
            f.write(text)

    def start(self, wait=True):
        self.log = open(self.logpath, "ab")
        self.log_mark = len(self.logtext())   # a restart must see its own "ready"
        env = dict(os.environ)
        env.update(self.env or {})
        self.proc = subprocess.Popen([LEXBUSD, "-c", self.conf], stdout=self.log, stderr=self.log,
                                     env=env, cwd=self.dir, preexec_fn=self.preexec)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=10.0):
        def ready():
            if self.proc.poll() is not None:
                raise TestFailure("lexbusd exited with %d at start-up:\n%s" % (self.proc.returncode, self.logtext()))
            return "ready" in self.logtext()[getattr(self, "log_mark", 0):]
        wait_for(ready, timeout, what="lexbusd to start")

    def logtext(self):
        try:
            with open(self.logpath, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def raw(self):
        c = RawClient.unix(self.sock)
        self.clients.append(c)
        return c

    def client(self, name, methods=None, subscribe=None, **kw):
        c = self.raw()
        ack = c.register(name, methods=methods, subscribe=subscribe, **kw)
        check(ack.get("type") == "REGISTER_ACK", "REGISTER %s refused: %r" % (name, ack))
        return c

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        """Stops the daemon; returns its exit code.  Fails the test if a
        sanitizer reported anything."""
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise TestFailure("lexbusd did not exit within %.0fs of %s" % (timeout, sig))
        self.check_sanitizers()
        return rc

    def check_sanitizers(self):
        log = self.logtext()
        for marker in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
            if marker in log:
                raise TestFailure("sanitizer report in lexbusd log:\n" + log[-4000:])

    def cli(self, *args, input=None, timeout=15.0, env=None):
        """Runs the `lexbus` CLI against this bus; returns CompletedProcess."""
        e = dict(os.environ)
        e["LEXBUS_URL"] = "unix:" + self.sock
        e.update(env or {})
        return subprocess.run([LEXBUS_CLI] + list(args), input=input, capture_output=True,
                              timeout=timeout, env=e, text=True)

    def reload(self, conf=None):
        """Writes `conf` as bus.conf (when given), sends SIGHUP and waits for
        the reload to end; returns what the daemon logged meanwhile (a
        plugin that refused its new settings says so there)."""
        if conf is not None:
            self.write_conf(conf)
        mark = len(self.logtext())
        self.send_signal(signal.SIGHUP)
        done = ("configuration reloaded", "reload failed, old configuration kept")
        wait_for(lambda: any(d in self.logtext()[mark:] for d in done), what="the reload")
        return self.logtext()[mark:]

    def stats(self):
        c = self.client("stats-probe-%d" % time.time_ns())
        r = c.call("lexbus", "stats")
        c.close()
        return r["data"]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for c in self.clients:
            c.close()
        try:
            if self.proc and self.proc.poll() is None:
                rc = self.stop()
                if exc[0] is None:
                    check(rc == 0, "lexbusd exited with %r on SIGTERM" % rc)
            elif exc[0] is None and self.proc:
                self.check_sanitizers()
        finally:
            if os.environ.get("LEXBUS_KEEP_TMP"):
                print("# kept %s" % self.dir)
            else:
                shutil.rmtree(self.dir, ignore_errors=True)
        return False


# ---------------------------------------------------------------- TAP

_tests = []


def test(fn):
    _tests.append(fn)
    return fn


def main():
    only = sys.argv[1:]
    todo = [t for t in _tests if not only or t.__name__ in only]
    print("1..%d" % len(todo), flush=True)
    failed = 0
    for i, t in enumerate(todo, 1):
        start = time.time()
        try:
            t()
            print("ok %d - %s (%.2fs)" % (i, t.__name__, time.time() - start), flush=True)
        except Skip as why:
            print("ok %d - %s # SKIP %s" % (i, t.__name__, why), flush=True)
        except Exception:
            failed += 1
            print("not ok %d - %s" % (i, t.__name__), flush=True)
            for line in traceback.format_exc().splitlines():
                print("# " + line, flush=True)
    sys.exit(1 if failed else 0)
