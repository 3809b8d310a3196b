"""Helpers for the websocket plugin's tests.

- ws_bus(): a real lexbusd with [plugin websocket] on a free port.
- node_modules(): installs the pinned npm packages of tests/websocket
  (package-lock.json) with `npm ci` into a cache directory of the build
  tree, once per lock file (a lock serialises concurrent tests).
- Sio: a socket.io-client 4.x puppet (sioctl.js) driven over stdin/stdout.
- RawWS: a WebSocket client written here, for frames no real client sends.
"""
import base64
import fcntl
import hashlib
import json
import os
import queue
import shutil
import socket
import struct
import subprocess
import threading
import time

import lbtest
from lbtest import Bus, TestFailure, check

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = os.environ.get("LEXBUS_BUILDDIR", os.path.abspath(os.path.join(HERE, "..", "..")))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def ws_section(port, extra="", listen=None):
    return "[plugin websocket]\nlisten = %s\n%s\n" % (listen or "127.0.0.1:%d" % port, extra)


def ws_bus(extra="", port=None, bus="", plugins_before="", plugins_after="", **kw):
    port = port or free_port()
    b = Bus(bus=bus, plugins=plugins_before + ws_section(port, extra) + plugins_after, **kw)
    b.port = port
    return b


# ---------------------------------------------------------------- npm

def node_modules():
    """The node_modules directory holding the pinned packages."""
    with open(os.path.join(HERE, "package-lock.json"), "rb") as f:
        tag = hashlib.sha256(f.read()).hexdigest()[:16]
    base = os.path.join(BUILD, "tests", "node-cache", "websocket")
    os.makedirs(base, exist_ok=True)
    dest = os.path.join(base, tag)
    stamp = os.path.join(dest, ".installed")
    with open(os.path.join(base, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(stamp):
            shutil.rmtree(dest, ignore_errors=True)
            os.makedirs(dest)
            for f in ("package.json", "package-lock.json"):
                shutil.copy(os.path.join(HERE, f), dest)
            r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--prefer-offline", "--loglevel=error",
                                "--cache", os.path.join(base, ".npm-cache")], cwd=dest, capture_output=True,
                               text=True, timeout=600)
            if r.returncode != 0:
                raise TestFailure("npm ci failed in %s:\n%s%s" % (dest, r.stdout, r.stderr))
            open(stamp, "w").close()
    return os.path.join(dest, "node_modules")


# ---------------------------------------------------------------- socket.io-client

class Sio:
    """One node process running sioctl.js; each socket has an id."""

    def __init__(self):
        env = dict(os.environ, NODE_PATH=node_modules())
        self.proc = subprocess.Popen(["node", os.path.join(HERE, "sioctl.js")], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.q = queue.Queue()
        self.seen = []
        threading.Thread(target=self._reader, daemon=True).start()
        self.expect(lambda m: m["ev"] == "ready", 30, "sioctl.js to start")

    def _reader(self):
        for line in self.proc.stdout:
            try:
                self.q.put(json.loads(line))
            except ValueError:
                self.q.put({"ev": "garbage", "line": line})
        self.q.put({"ev": "exited"})

    def cmd(self, **c):
        self.proc.stdin.write(json.dumps(c) + "\n")
        self.proc.stdin.flush()

    def expect(self, pred, timeout=10.0, what="a report"):
        """The first report (seen before or arriving) matching pred."""
        for i, m in enumerate(self.seen):
            if pred(m):
                return self.seen.pop(i)
        end = time.time() + timeout
        while True:
            left = end - time.time()
            if left <= 0:
                raise TestFailure("socket.io-client: no %s within %.0fs (seen: %r)" % (what, timeout, self.seen[-10:]))
            try:
                m = self.q.get(timeout=left)
            except queue.Empty:
                continue
            if m["ev"] == "exited":
                raise TestFailure("sioctl.js exited: %s" % self.proc.stderr.read())
            if pred(m):
                return m
            self.seen.append(m)

    def connect(self, id, url, **opts):
        self.cmd(op="connect", id=id, url=url, opts=opts)
        m = self.expect(lambda m: m.get("id") == id and m["ev"] in ("connect", "connect_error"), 15,
                        "connect of %s" % id)
        return m

    def emit(self, id, event, *args, ack=False, tag=None):
        self.cmd(op="emit", id=id, event=event, args=list(args), ack=ack, tag=tag)

    def call(self, id, event, *args, timeout=10.0):
        """Emits with an ack callback and returns the callback's arguments."""
        tag = "t%d" % time.time_ns()
        self.emit(id, event, *args, ack=True, tag=tag)
        return self.expect(lambda m: m["ev"] == "ack" and m.get("tag") == tag, timeout, "ack of " + event)["args"]

    def answer_calls(self, id, mode):
        """Makes socket `id` answer ipc:call (echo, raw, fail or none)."""
        self.cmd(op="answer_calls", id=id, mode=mode)
        self.expect(lambda m: m["ev"] == "answering" and m["id"] == id and m["mode"] == mode, 10, "answer_calls")

    def event(self, id, name, timeout=10.0):
        return self.expect(lambda m: m["ev"] == "event" and m["id"] == id and m["event"] == name, timeout,
                           "event %s on %s" % (name, id))

    def close(self):
        if self.proc.poll() is None:
            try:
                self.cmd(op="exit")
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


# ---------------------------------------------------------------- raw WebSocket

class WSClosed(Exception):
    def __init__(self, code=None, reason=""):
        super().__init__("closed %r %r" % (code, reason))
        self.code = code
        self.reason = reason


class RawWS:
    """A WebSocket client that can send anything (unmasked frames, reserved
    bits, bad lengths) and reads the server's frames as they are."""

    def __init__(self, port, path="/lexbus", headers=None, host="127.0.0.1", timeout=5.0, handshake=True, ctx=None):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        if ctx:   # wss: an ssl.SSLContext (the server's certificate names localhost)
            self.sock = ctx.wrap_socket(self.sock, server_hostname="localhost")
        self.buf = b""
        self.port = port
        if handshake:
            self.status, self.headers = self.handshake(path, headers)

    def handshake(self, path, headers=None, key=None, version="13", method="GET"):
        key = key or base64.b64encode(os.urandom(16)).decode()
        h = {"Host": "127.0.0.1:%d" % self.port, "Upgrade": "websocket", "Connection": "Upgrade",
             "Sec-WebSocket-Key": key, "Sec-WebSocket-Version": version}
        h.update(headers or {})
        req = "%s %s HTTP/1.1\r\n" % (method, path) + "".join(
            "%s: %s\r\n" % (k, v) for k, v in h.items() if v is not None) + "\r\n"
        self.sock.sendall(req.encode())
        status, hdrs = self.read_head()
        if status == 101:
            want = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode())
                                    .digest()).decode()
            check(hdrs.get("sec-websocket-accept") == want, "Sec-WebSocket-Accept: %r" % hdrs)
        return status, hdrs

    def read_head(self):
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise WSClosed()
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {}
        for l in lines[1:]:
            k, v = l.split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
        self.head_headers = hdrs
        return status, hdrs

    def read_body(self):
        n = int(self.head_headers.get("content-length", "0"))
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.buf += chunk
        body, self.buf = self.buf[:n], self.buf[n:]
        return body

    @staticmethod
    def frame(opcode, payload=b"", fin=True, rsv=0, mask=True, length=None):
        if isinstance(payload, str):
            payload = payload.encode()
        n = len(payload) if length is None else length
        b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
        m = 0x80 if mask else 0
        if n < 126:
            head = struct.pack("!BB", b0, m | n)
        elif n < 65536:
            head = struct.pack("!BBH", b0, m | 126, n)
        else:
            head = struct.pack("!BBQ", b0, m | 127, n)
        if mask:
            key = os.urandom(4)
            payload = bytes(c ^ key[i % 4] for i, c in enumerate(payload))
            head += key
        return head + payload

    def send_frame(self, opcode, payload=b"", **kw):
        self.sock.sendall(self.frame(opcode, payload, **kw))

    def send_text(self, text):
        self.send_frame(1, text)

    def _fill(self, n, timeout):
        self.sock.settimeout(timeout)
        while len(self.buf) < n:
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise TestFailure("no WebSocket frame within %.1fs" % timeout)
            except (ConnectionResetError, BrokenPipeError):
                raise WSClosed()
            if not chunk:
                raise WSClosed()
            self.buf += chunk

    def recv_frame(self, timeout=5.0):
        """(opcode, payload bytes) of the next server frame."""
        self._fill(2, timeout)
        b0, b1 = self.buf[0], self.buf[1]
        check(not (b1 & 0x80), "the server masked a frame")
        check(b0 & 0x70 == 0, "the server set reserved bits")
        n, off = b1 & 0x7F, 2
        if n == 126:
            self._fill(4, timeout)
            n, off = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            self._fill(10, timeout)
            n, off = struct.unpack("!Q", self.buf[2:10])[0], 10
        self._fill(off + n, timeout)
        payload, self.buf = self.buf[off:off + n], self.buf[off + n:]
        return b0 & 0x0F, payload

    def recv(self, timeout=5.0):
        """The next text message as a string (answers nothing; raises
        WSClosed on a close frame or EOF)."""
        while True:
            op, p = self.recv_frame(timeout)
            if op == 8:
                code = struct.unpack("!H", p[:2])[0] if len(p) >= 2 else None
                raise WSClosed(code, p[2:].decode("utf-8", "replace"))
            if op == 1:
                return p.decode()
            if op == 9:
                self.send_frame(10, p)

    def recv_json(self, timeout=5.0):
        return json.loads(self.recv(timeout))

    def expect_close(self, timeout=5.0):
        """Reads until the server's close frame; returns (code, reason, texts
        seen before it), checking the TCP connection then ends."""
        texts = []
        end = time.time() + timeout
        while True:
            try:
                texts.append(self.recv(max(0.05, end - time.time())))
            except WSClosed as e:
                if e.code is not None:
                    self.sock.settimeout(max(0.5, end - time.time()))
                    try:
                        while self.sock.recv(65536):
                            pass
                    except OSError:
                        pass
                return e.code, e.reason, texts

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def http(port, method, path, headers=None, body=None, timeout=5.0, ctx=None):
    """One HTTP/1.1 request on a new connection (https with an
    ssl.SSLContext): (status, headers, body)."""
    c = RawWS(port, handshake=False, timeout=timeout, ctx=ctx)
    h = {"Host": "127.0.0.1:%d" % port, "Connection": "close"}
    h.update(headers or {})
    if body is not None:
        if isinstance(body, str):
            body = body.encode()
        h["Content-Length"] = str(len(body))
    req = ("%s %s HTTP/1.1\r\n" % (method, path) + "".join("%s: %s\r\n" % kv for kv in h.items()) + "\r\n").encode()
    c.sock.sendall(req + (body or b""))
    status, hdrs = c.read_head()
    data = c.read_body()
    c.close()
    return status, hdrs, data
