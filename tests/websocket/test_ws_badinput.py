"""Bad input on the websocket listener, with a client written for it
(tests/websocket/wstest.py RawWS): every refusal is clear (an HTTP status
or a WebSocket close code with a reason), the daemon keeps serving
everyone else, and nothing leaks (ASan checks the daemon at exit)."""
import errno
import json
import resource
import select
import socket
import struct
import time

import lbtest
from lbtest import check, check_eq, test, wait_for
from wstest import RawWS, WSClosed, http, ws_bus


def still_serving(bus):
    c = bus.client("probe-%d" % time.time_ns())
    check_eq(c.call("lexbus", "ping")["data"]["pong"], True, "the bus still serves")
    c.close()


def raw_request(port, data, timeout=5.0):
    """Sends raw bytes; returns (status, body) of the answer."""
    c = RawWS(port, handshake=False, timeout=timeout)
    c.sock.sendall(data)
    status, hdrs = c.read_head()
    body = c.read_body()
    c.close()
    return status, hdrs, body


def ws_client(bus, name=None):
    c = RawWS(bus.port)
    check_eq(c.status, 101, "upgraded")
    if name:
        c.send_text(json.dumps({"type": "REGISTER", "serviceName": name}))
        check_eq(json.loads(c.recv())["type"], "REGISTER_ACK", "registered")
    return c


def closes_with(bus, send, code, why_part, register=True):
    c = ws_client(bus, "bad-%d" % time.time_ns() if register else None)
    send(c)
    got, reason, _ = c.expect_close()
    check_eq(got, code, "close code (reason %r)" % reason)
    check(why_part in reason, "reason %r should mention %r" % (reason, why_part))
    c.close()


@test
def malformed_and_oversized_http_requests():
    with ws_bus(extra="max_header = 4K") as bus:
        p = bus.port
        check_eq(raw_request(p, b"GARBAGE\r\n\r\n")[0], 400, "not HTTP")
        check_eq(raw_request(p, b"GET /health HTTP/2.0\r\nHost: x\r\n\r\n")[0], 505, "HTTP/2.0")
        check_eq(raw_request(p, b"GET http://x/health HTTP/1.1\r\nHost: x\r\n\r\n")[0], 400, "absolute URL")
        big = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n"
        check_eq(raw_request(p, big)[0], 431, "head over max_header")
        many = b"GET /health HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(80)) + b"\r\n"
        check_eq(raw_request(p, many)[0], 431, "more than 64 headers")
        check_eq(raw_request(p, b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\n\r\n")[0], 431, "URL counted in the head")
        with ws_bus(extra="max_header = 64K") as bus2:
            check_eq(raw_request(bus2.port, b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\n\r\n")[0], 414, "URL too long")
        check_eq(raw_request(p, b"GET /health HTTP/1.1\r\nBad Header\r\n\r\n")[0], 400, "header without a colon")
        st, _, body = raw_request(p, b"POST /socket.io/?EIO=4&transport=polling&sid=x HTTP/1.1\r\nHost: x\r\n"
                                     b"Content-Length: 2000000\r\n\r\n")
        check_eq(st, 413, "body over max_payload")
        check_eq(http(p, "GET", "/nothing-here")[0], 404, "unknown path")
        check_eq(http(p, "DELETE", "/health")[0], 405, "method")
        check_eq(http(p, "HEAD", "/health")[0], 200, "HEAD")
        still_serving(bus)


@test
def pipelined_and_keep_alive_requests():
    with ws_bus() as bus:
        c = RawWS(bus.port, handshake=False)
        c.sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
        st1, _ = c.read_head()
        c.read_body()
        st2, _ = c.read_head()
        c.read_body()
        check_eq((st1, st2), (200, 404), "two pipelined requests, answered in order")
        c.sock.sendall(b"GET /health HTTP/1.0\r\n\r\n")
        st3, h = c.read_head()
        c.read_body()
        check_eq((st3, h.get("connection")), (200, "close"), "HTTP/1.0 closes")
        check_eq(c.sock.recv(10), b"", "closed after the HTTP/1.0 answer")


@test
def slowloris_headers_time_out():
    with ws_bus(extra="header_timeout = 1s") as bus:
        slow = RawWS(bus.port, handshake=False, timeout=10)
        slow.sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        start = time.time()
        status = None
        try:
            for i in range(40):
                slow.sock.sendall(b"X-Drip-%d: 1\r\n" % i)   # never the end of the head
                r, _, _ = select.select([slow.sock], [], [], 0.2)
                if r:
                    status, _ = slow.read_head()
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
        check_eq(status, 408, "a head trickled in is cut at header_timeout")
        check(time.time() - start < 4, "within the timeout, not the trickle's pace")
        idle = RawWS(bus.port, handshake=False, timeout=5)
        idle.sock.settimeout(5)
        t = time.time()
        check_eq(idle.sock.recv(10), b"", "an idle socket is closed quietly")
        check(0.5 < time.time() - t < 4, "after header_timeout")
        still_serving(bus)
        check(http(bus.port, "GET", "/health")[0] == 200, "others served meanwhile")


@test
def bad_websocket_handshakes():
    with ws_bus() as bus:
        p = bus.port
        c = RawWS(p, handshake=False)
        check_eq(c.handshake("/lexbus", method="POST")[0], 400, "a non-GET upgrade")
        c = RawWS(p, handshake=False)
        check_eq(c.handshake("/lexbus", key="c2hvcnQ=")[0], 400, "a key that is not 16 bytes")
        c = RawWS(p, handshake=False)
        check_eq(c.handshake("/lexbus", key="not base64 at all!!!!!==")[0], 400, "a key that is not base64")
        c = RawWS(p, handshake=False)
        st, h = c.handshake("/lexbus", version="8")
        check_eq((st, h.get("sec-websocket-version")), (426, "13"), "old version: 426 naming 13")
        c = RawWS(p, handshake=False)
        check_eq(c.handshake("/lexbus", headers={"Upgrade": None, "Connection": None})[0], 426, "no upgrade")
        c = RawWS(p, handshake=False)
        check_eq(c.handshake("/lexbus", headers={"Upgrade": "h2c"})[0], 426, "another protocol")
        st, _, _ = raw_request(p, b"GET /lexbus HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Key: "
                                  b"dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        check_eq(st, 400, "two keys")
        st, _, _ = raw_request(p, b"GET /lexbus HTTP/1.0\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        check_eq(st, 400, "HTTP/1.0 upgrade")
        still_serving(bus)


@test
def origins():
    with ws_bus(extra="allowed_origins = https://good.example, same-origin") as bus:
        p = bus.port
        for origin, want in (("https://good.example", 101), ("https://evil.example", 403),
                             ("http://127.0.0.1:%d" % p, 101), ("http://localhost:%d" % p, 403), (None, 101)):
            c = RawWS(p, handshake=False)
            check_eq(c.handshake("/lexbus", headers={"Origin": origin})[0], want, "Origin %r" % origin)
            c.close()
        st, h, _ = http(p, "GET", "/socket.io/?EIO=4&transport=polling", headers={"Origin": "https://good.example"})
        check_eq((st, h.get("access-control-allow-origin")), (200, "https://good.example"), "CORS for polling")
        st, h, _ = http(p, "GET", "/socket.io/?EIO=4&transport=polling", headers={"Origin": "https://evil.example"})
        check_eq(st, 403, "polling from another origin")
        st, h, _ = http(p, "OPTIONS", "/socket.io/?EIO=4&transport=polling", headers={"Origin": "https://good.example"})
        check_eq((st, "POST" in h.get("access-control-allow-methods", "")), (204, True), "preflight")


@test
def bad_frames_close_with_the_right_code():
    with ws_bus(extra="max_message = 4K") as bus:
        closes_with(bus, lambda c: c.sock.sendall(c.frame(1, '{"type":"HEARTBEAT"}', mask=False)), 1002, "masked")
        closes_with(bus, lambda c: c.send_frame(1, "{}", rsv=4), 1002, "reserved bits")
        closes_with(bus, lambda c: c.send_frame(3, "x"), 1002, "reserved opcode")
        closes_with(bus, lambda c: c.send_frame(0xB, "x"), 1002, "reserved opcode")
        closes_with(bus, lambda c: c.send_frame(9, "x", fin=False), 1002, "control frame fragmented")
        closes_with(bus, lambda c: c.sock.sendall(c.frame(9, b"x" * 126)), 1002, "longer than 125")
        closes_with(bus, lambda c: c.send_frame(0, "x"), 1002, "continuation")
        closes_with(bus, lambda c: (c.send_frame(1, "{", fin=False), c.send_frame(1, "}")), 1002, "fragmented")
        closes_with(bus, lambda c: c.send_text("x" * 5000), 1009, "max_message")
        # A frame claiming 2^40 bytes: refused from its header alone.
        closes_with(bus, lambda c: c.sock.sendall(c.frame(1, b"", length=1 << 40)[:14]), 1009, "max_message")
        # Lengths not in their shortest form, and a 64-bit length with the top bit set.
        closes_with(bus, lambda c: c.sock.sendall(b"\x81\xfe\x00\x05" + b"\x00" * 9), 1002, "shortest form")
        closes_with(bus, lambda c: c.sock.sendall(b"\x81\xff" + b"\x80" + b"\x00" * 7 + b"\x00" * 4), 1002, "top bit")
        closes_with(bus, lambda c: (c.send_frame(1, "x" * 3000, fin=False), c.send_frame(0, "y" * 3000)), 1009,
                    "max_message")
        closes_with(bus, lambda c: c.send_frame(1, b'{"type":"EMIT","event":"a","payload":"\xc3\x28"}'), 1007, "UTF-8")
        closes_with(bus, lambda c: c.send_frame(1, b'"\xed\xa0\x80"'), 1007, "UTF-8")   # a surrogate
        closes_with(bus, lambda c: (c.send_frame(1, b'"\xe2\x82', fin=False), c.send_frame(0, b'\x28"')), 1007,
                    "UTF-8")
        closes_with(bus, lambda c: c.send_frame(8, struct.pack("!H", 1000) + b"\xff"), 1007, "UTF-8")
        closes_with(bus, lambda c: c.send_frame(8, struct.pack("!H", 999)), 1002, "close status")
        closes_with(bus, lambda c: c.send_frame(8, struct.pack("!H", 1005)), 1002, "close status")
        closes_with(bus, lambda c: c.send_frame(8, b"x"), 1002, "1-byte")
        closes_with(bus, lambda c: c.send_frame(2, b"\x00\x01"), 1003, "binary")
        # A clean close is echoed.
        c = ws_client(bus, "polite")
        c.send_frame(8, struct.pack("!H", 1001) + b"bye")
        check_eq(c.expect_close()[0], 1001, "close echoed")
        still_serving(bus)
        check_eq(bus.stats()["connections"]["open"], 1, "every refused connection is gone (the probe remains)")


@test
def ping_flood_is_cut_off():
    with ws_bus(extra="max_ping_rate = 20") as bus:
        c = ws_client(bus, "flooder")
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.sock.sendall(b"".join(c.frame(9, b"p" * 100) for _ in range(500)))
        pongs = 0
        while True:
            try:
                op, p = c.recv_frame()
            except WSClosed:
                check(False, "no close frame")
            if op == 10:
                pongs += 1
                continue
            check_eq(op, 8, "close frame")
            check_eq(struct.unpack("!H", p[:2])[0], 1008, "policy violation")
            check(b"ping flood" in p, p)
            break
        check(pongs <= 20, "at most max_ping_rate pongs: %d" % pongs)
        # Pings at a normal pace are answered.
        ok = ws_client(bus)
        for i in range(5):
            ok.send_frame(9, b"%d" % i)
            check_eq(ok.recv_frame(), (10, b"%d" % i), "pong")
        still_serving(bus)


@test
def ten_thousand_connections_opened_and_dropped():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 10000
    need = want + 200
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    check(soft >= need, "the test needs %d descriptors (ulimit -n is %d; scripts/test.sh raises it)" % (need, soft))
    with ws_bus() as bus:   # lexbusd inherits the raised limit
        req = (b"GET /lexbus HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        socks = []
        for i in range(want):
            s = socket.socket()
            s.setblocking(False)
            err = s.connect_ex(("127.0.0.1", bus.port))
            check(err in (0, errno.EINPROGRESS), "connect: %s" % errno.errorcode.get(err))
            socks.append(s)
        pending = {s.fileno(): s for s in socks}
        sent = set()
        upgraded = 0
        ep = select.epoll()
        for s in socks:
            ep.register(s.fileno(), select.EPOLLOUT | select.EPOLLIN)
        end = time.time() + 60
        bufs = {}
        while pending and time.time() < end:
            for fd, ev in ep.poll(1.0):
                s = pending.get(fd)
                if s is None:
                    continue
                if fd not in sent and ev & select.EPOLLOUT:
                    s.send(req)
                    sent.add(fd)
                    ep.modify(fd, select.EPOLLIN)
                elif ev & select.EPOLLIN:
                    data = bufs.get(fd, b"") + s.recv(4096)
                    bufs[fd] = data
                    if b"\r\n\r\n" in data:
                        check(data.startswith(b"HTTP/1.1 101"), data[:60])
                        upgraded += 1
                        ep.unregister(fd)
                        del pending[fd]
        check_eq(upgraded, want, "every connection upgraded")
        wait_for(lambda: bus.stats()["connections"]["open"] > want, 30, what="%d connections" % want)
        # Dropped all at once, abruptly (RST).
        for s in socks:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        ep.close()
        wait_for(lambda: bus.stats()["connections"]["open"] == 1, 60, what="the bus to see every socket gone")
        st = bus.stats()["plugins"]["websocket"]
        check_eq(st["sockets"], 0, "the plugin holds no socket: %r" % st)
        still_serving(bus)
        ws = ws_client(bus, "after-the-storm")
        ws.close()


lbtest.main()
