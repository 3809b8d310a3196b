"""Helpers for the redis plugin's tests: a real redis-server on a private
unix socket, lexbusd nodes joined through it, a tiny RESP client, a
threaded service that answers calls, and Exprsn-style workers (node +
ioredis + jsonwebtoken, installed by `npm ci` into a cache directory the
tests own)."""
import hashlib
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import lbtest  # noqa: E402
from lbtest import Bus, RawClient, TestFailure, check, wait_for  # noqa: E402,F401

KEY = "exprsn-broker-key-0123456789abcdef"   # the workers' IPC_BROKER_KEY and the bus's key_file


class Redis:
    """A real redis-server listening on a unix socket in its own temp dir."""

    def __init__(self, start=True, args=(), password=None):
        self.dir = tempfile.mkdtemp(prefix="lexbus-redis-")
        self.sock = os.path.join(self.dir, "redis.sock")
        self.url = "unix://" + self.sock
        self.password = password
        self.args = list(args) + (["--requirepass", password] if password else [])
        self.proc = None
        if start:
            self.start()

    def start(self):
        log = open(os.path.join(self.dir, "redis.log"), "ab")
        self.proc = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", self.sock, "--unixsocketperm",
                                      "700", "--save", "", "--appendonly", "no", "--enable-debug-command", "local",
                                      "--dir", self.dir] + self.args,
                                     stdout=log, stderr=log)
        wait_for(lambda: os.path.exists(self.sock) and self.cli("PING").strip() == "PONG", 10, what="redis-server")
        return self

    def cli(self, *args, input=None, timeout=30):
        auth = ["-a", self.password, "--no-auth-warning"] if self.password else []
        r = subprocess.run(["redis-cli", "-s", self.sock] + auth + list(args), input=input, capture_output=True,
                           timeout=timeout)
        return r.stdout.decode("utf-8", "replace")

    def publish(self, channel, body):
        """redis-cli PUBLISH (body: str or bytes, given with -x on stdin)."""
        data = body if isinstance(body, bytes) else body.encode()
        out = self.cli("-x", "PUBLISH", channel, input=data)
        return int(out.strip() or "0")

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class Resp:
    """A minimal RESP client over the unix socket (commands and SUBSCRIBE)."""

    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(path)
        self.buf = b""

    def send(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.s.sendall(out)

    def _line(self, timeout):
        self.s.settimeout(timeout)
        while b"\r\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError()
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read(self, timeout=5.0):
        line = self._line(timeout)
        t, rest = line[:1], line[1:]
        if t in (b"+", b"-"):
            return rest.decode()
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                chunk = self.s.recv(65536)
                if not chunk:
                    raise EOFError()
                self.buf += chunk
            v, self.buf = self.buf[:n], self.buf[n + 2:]
            return v
        if t == b"*":
            return [self.read(timeout) for _ in range(int(rest))]
        raise TestFailure("bad RESP %r" % line)

    def cmd(self, *args):
        self.send(*args)
        return self.read()

    def close(self):
        self.s.close()


def node(redis, name, redis_conf="", plugins_before="", plugins_after="", node_ttl="1500ms", url=None, **kw):
    """A lexbusd node joined through `redis` (not waiting for the cluster)."""
    text = plugins_before + "[plugin redis]\nurl = %s\nnode_ttl = %s\n%s\n" % (url or redis.url, node_ttl, redis_conf)
    return Bus(node=name, plugins=text + plugins_after, **kw)


def rstats(bus):
    return bus.stats()["plugins"]["redis"]


def wait_nodes(bus, n, timeout=10.0):
    """Waits until `bus` sees n other live nodes."""
    return wait_for(lambda: rstats(bus).get("nodes") == n and rstats(bus)["state"] == "up", timeout,
                    what="%d other nodes on %s" % (n, bus.conf))


def wait_service(bus, name, timeout=5.0, node=None):
    """Waits until `bus` lists service `name` (on `node`, if given); returns its entry."""
    def look():
        c = bus.raw()
        c.register("look-%d" % time.time_ns())
        r = c.call("lexbus", "services", {"name": name})
        c.close()
        bus.clients.remove(c)
        for s in r.get("data") or []:
            if s["name"] == name and (node is None or any(i["node"] == node for i in s["sessions"])):
                return s
        return None
    return wait_for(look, timeout, what="service %s on %s" % (name, bus.conf))


class Server:
    """A service on a bus that answers every CALL from a thread: echo its
    params with the node's name, or hang (never answer) when told."""

    def __init__(self, bus, name, methods=("echo", "hang"), subscribe=None, tag=None):
        self.c = bus.client(name, methods=list(methods), subscribe=subscribe)
        self.tag = tag or name
        self.calls, self.events = [], []
        self.stop = False
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop:
            try:
                m = self.c.recv(0.2)
            except TestFailure:
                continue
            except (lbtest.Closed, OSError):
                return
            if m.get("type") == "CALL":
                self.calls.append(m)
                if m["method"] != "hang":
                    self.c.send({"type": "RESPONSE", "id": m["id"], "status": "success",
                                 "data": {"echo": m.get("params"), "by": self.tag}})
            elif m.get("type") == "EVENT":
                self.events.append(m)

    def close(self):
        self.stop = True
        self.c.close()
        self.t.join(2)


# ---------------------------------------------------------------- workers

NPM_DIR = os.path.join(lbtest.BUILDDIR, "tests", "node-cache", "redis")


def npm_modules():
    """ioredis and jsonwebtoken as pinned in package-lock.json, installed
    once with `npm ci` into NPM_DIR (reinstalled when the lock changes)."""
    lock = os.path.join(HERE, "package-lock.json")
    with open(lock, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    stamp = os.path.join(NPM_DIR, ".lock-sha256")
    try:
        with open(stamp) as f:
            if f.read().strip() == digest and os.path.isdir(os.path.join(NPM_DIR, "node_modules", "ioredis")):
                return os.path.join(NPM_DIR, "node_modules")
    except OSError:
        pass
    os.makedirs(NPM_DIR, exist_ok=True)
    for f in ("package.json", "package-lock.json"):
        shutil.copy(os.path.join(HERE, f), NPM_DIR)
    r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NPM_DIR,
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise TestFailure("npm ci (ioredis, jsonwebtoken) failed in %s:\n%s%s" % (NPM_DIR, r.stdout, r.stderr))
    with open(stamp, "w") as f:
        f.write(digest)
    return os.path.join(NPM_DIR, "node_modules")


class Worker:
    """An Exprsn IPC worker (tests/redis/worker.js) driven over stdin/stdout."""

    def __init__(self, redis, name, key=KEY, extra_env=None):
        env = dict(os.environ, REDIS_PATH=redis.sock, SERVICE=name, IPC_BROKER_KEY=key, NODE_PATH=npm_modules())
        env.update(extra_env or {})
        self.name = name
        self.p = subprocess.Popen(["node", os.path.join(HERE, "worker.js")], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True, bufsize=1)
        self.q = queue.Queue()
        self.seen = []
        threading.Thread(target=self._read, daemon=True).start()
        self.expect(lambda m: m.get("ready"), 10, "worker %s ready" % name)

    def _read(self):
        for line in self.p.stdout:
            try:
                self.q.put(json.loads(line))
            except ValueError:
                self.q.put({"stdout": line})

    def send(self, **cmd):
        self.p.stdin.write(json.dumps(cmd) + "\n")
        self.p.stdin.flush()

    def expect(self, pred, timeout=5.0, what="a worker message"):
        end = time.time() + timeout
        for m in self.seen:
            if pred(m):
                self.seen.remove(m)
                return m
        while time.time() < end:
            try:
                m = self.q.get(timeout=max(0.01, end - time.time()))
            except queue.Empty:
                break
            if pred(m):
                return m
            self.seen.append(m)
        err = self.p.stderr.read() if self.p.poll() is not None else ""
        raise TestFailure("worker %s: no %s within %.1fs (saw %r) %s" % (self.name, what, timeout, self.seen[-8:], err))

    def drain(self):
        while True:
            try:
                self.seen.append(self.q.get_nowait())
            except queue.Empty:
                return self.seen

    def close(self):
        try:
            self.send(cmd="quit")
            self.p.wait(5)
        except (OSError, subprocess.TimeoutExpired, BrokenPipeError, ValueError):
            self.p.kill()
            self.p.wait()
