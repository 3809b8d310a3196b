"""Engine.IO v4 and Socket.IO v5 on the wire, frame by frame, with clients
written here (the cases of the engine.io-protocol and socket.io-protocol
test suites that apply to a bridge, and every bad packet): handshakes,
polling and its rules (one GET and one POST at a time, unknown sids),
pings and their timeouts, the upgrade, the Socket.IO grammar, namespaces
not joined, binary refused, back-pressure ending a session that stops
polling."""
import json
import threading
import time

import lbtest
from lbtest import check, check_eq, test, wait_for
from wstest import RawWS, WSClosed, http, ws_bus

EIO = "/socket.io/?EIO=4&transport=%s"


def handshake(port):
    st, h, body = http(port, "GET", EIO % "polling")
    check_eq(st, 200, "handshake")
    check(h["content-type"].startswith("text/plain"), h)
    check(body.startswith(b"0"), body)
    return json.loads(body[1:])


def get(port, sid, timeout=5):
    st, _, body = http(port, "GET", EIO % "polling" + "&sid=" + sid, timeout=timeout)
    return st, body.decode()


def post(port, sid, body, headers=None):
    st, _, b = http(port, "POST", EIO % "polling" + "&sid=" + sid, body=body,
                    headers=dict({"Content-Type": "text/plain;charset=UTF-8"}, **(headers or {})))
    return st, b.decode("utf-8", "replace")


def ws_session(port, sid=None):
    c = RawWS(port, path=EIO % "websocket" + ("&sid=" + sid if sid else ""))
    check_eq(c.status, 101, "WebSocket upgrade")
    if not sid:
        op = c.recv()
        check(op.startswith("0"), op)
        c.open = json.loads(op[1:])
    return c


def recv_skip_pings(c, timeout=5):
    while True:
        m = c.recv(timeout)
        if m != "2":
            return m


def joined(port, ns="/ipc/eio"):
    c = ws_session(port)
    c.send_text("40%s," % ns)
    m = recv_skip_pings(c)
    check(m.startswith("40%s,{\"sid\":\"" % ns), m)
    return c


def closed(c, what):
    try:
        code, reason, _ = c.expect_close(timeout=5)
        return code, reason
    except WSClosed:
        return None, ""


@test
def handshakes_and_their_refusals():
    with ws_bus() as bus:
        p = bus.port
        o = handshake(p)
        check_eq(sorted(o), ["maxPayload", "pingInterval", "pingTimeout", "sid", "upgrades"], "open packet keys")
        check_eq((o["upgrades"], o["pingInterval"], o["pingTimeout"], o["maxPayload"]),
                 (["websocket"], 25000, 20000, 1000000), "defaults")
        check_eq(len(o["sid"]), 20, "sid")
        for path, code in (("/socket.io/?transport=polling", 5), ("/socket.io/?EIO=abc&transport=polling", 5),
                           ("/socket.io/?EIO=3&transport=polling", 5), ("/socket.io/?EIO=4", 0),
                           ("/socket.io/?EIO=4&transport=abc", 0)):
            st, _, body = http(p, "GET", path)
            check_eq((st, json.loads(body)["code"]), (400, code), path)
        st, _, body = http(p, "POST", EIO % "polling", body="x")
        check_eq((st, json.loads(body)["code"]), (400, 2), "a POST cannot open a session")
        check_eq(http(p, "PUT", EIO % "polling")[0], 400, "PUT")
        st, _, body = http(p, "GET", EIO % "polling" + "&sid=AAAAAAAAAAAAAAAAAAAA")
        check_eq((st, json.loads(body)["code"]), (400, 1), "unknown sid")
        c = ws_session(p)
        check_eq(c.open["upgrades"], [], "no upgrades from a WebSocket")
        c.close()
        for path in ("/socket.io/?transport=websocket", "/socket.io/?EIO=4&transport=abc",
                     "/socket.io/?EIO=4&transport=websocket&sid=nope"):
            r = RawWS(p, handshake=False)
            check_eq(r.handshake(path)[0], 400, "refused before the upgrade: " + path)
        check_eq(http(p, "GET", "/socket.io?EIO=4&transport=polling")[0], 200, "the path without its slash")


@test
def polling_messages_batches_and_rules():
    with ws_bus() as bus:
        p = bus.port
        sid = handshake(p)["sid"]
        check_eq(post(p, sid, "40/ipc/pa,\x1e40/ipc/pb,"), (200, "ok"), "two packets in one POST")
        st, body = get(p, sid)
        parts = body.split("\x1e")
        check_eq((st, len(parts)), (200, 2), "two answers in one GET: %r" % body)
        check(parts[0].startswith('40/ipc/pa,{"sid":"') and parts[1].startswith('40/ipc/pb,{"sid":"'), body)
        # A held GET is answered when something arrives.
        res = {}
        t = threading.Thread(target=lambda: res.update(r=get(p, sid)))
        t.start()
        time.sleep(0.3)
        pub = bus.client("pub")
        pub.send({"type": "EMIT", "event": "to:pa", "to": "pa", "payload": {"x": 1}})
        t.join(5)
        st, body = res["r"]
        check_eq(st, 200, "held poll answered")
        check_eq(body, '42/ipc/pa,["to:pa",{"x": 1},{"source":"pub","target":"pa"}]', "the event, then its meta")
        # Two polls at once: the session ends, the first gets a close packet.
        res = {}
        t = threading.Thread(target=lambda: res.update(r=get(p, sid)))
        t.start()
        time.sleep(0.3)
        st2, _ = get(p, sid)
        t.join(5)
        check_eq((res["r"], st2), ((200, "1"), 400), "duplicate poll")
        check_eq(get(p, sid)[0], 400, "the session is gone")
        # A packet that is not Engine.IO ends the session.
        sid = handshake(p)["sid"]
        check_eq(post(p, sid, "abc")[0], 400, "bad packet")
        check_eq(get(p, sid)[0], 400, "session closed")
        sid = handshake(p)["sid"]
        st, _, _ = http(p, "POST", EIO % "polling" + "&sid=" + sid, body=b"\x01\x02",
                        headers={"Content-Type": "application/octet-stream"})
        check_eq(st, 400, "binary POST body")
        sid = handshake(p)["sid"]
        check_eq(post(p, sid, b'42/ipc/x,["a\xff"]')[0], 400, "a body that is not UTF-8")
        check_eq(get(p, sid)[0], 400, "ends the session")
        sid = handshake(p)["sid"]
        st, _ = post(p, sid, "4" + "x" * 1100000)
        check_eq(st, 413, "over maxPayload")


@test
def client_close_and_noop():
    with ws_bus() as bus:
        p = bus.port
        sid = handshake(p)["sid"]
        res = {}
        t = threading.Thread(target=lambda: res.update(r=get(p, sid)))
        t.start()
        time.sleep(0.3)
        check_eq(post(p, sid, "1"), (200, "ok"), "close packet posted")
        t.join(5)
        check_eq(res["r"], (200, "6"), "the held poll ends with a noop")
        check_eq(get(p, sid)[0], 400, "then the sid is unknown")
        c = ws_session(p)
        c.send_text("1")
        code, _ = closed(c, "close")
        check_eq(code, 1000, "a close packet over WebSocket")


@test
def heartbeats_and_their_timeouts():
    with ws_bus(extra="ping_interval = 300ms\nping_timeout = 200ms\nhandshake_timeout = 30s") as bus:
        p = bus.port
        sid = handshake(p)["sid"]
        for i in range(3):
            check_eq(get(p, sid), (200, "2"), "ping %d over polling" % i)
            check_eq(post(p, sid, "3"), (200, "ok"), "pong")
        time.sleep(0.8)
        check_eq(get(p, sid)[0], 400, "no pong: the session is gone")
        c = ws_session(p)
        check_eq((c.open["pingInterval"], c.open["pingTimeout"]), (300, 200), "announced")
        for i in range(3):
            check_eq(c.recv(), "2", "ping %d over WebSocket" % i)
            c.send_text("3")
        code, reason = closed(c, "ping timeout")
        check_eq(code, 1000, "closed after a missed pong (%r)" % reason)
        check("ping timeout" in reason, reason)
        c = ws_session(p)
        c.send_text("2")
        code, reason = closed(c, "client ping")
        check_eq(code, 1008, "a client ping is refused (%r)" % reason)
        check("server pings" in reason, reason)
        check(bus.stats()["plugins"]["websocket"]["eio_timeouts"] >= 2, "timeouts counted")
    with ws_bus(extra="handshake_timeout = 500ms") as bus:
        c = ws_session(bus.port)
        code, reason = closed(c, "no namespace")
        check_eq(code, 1008, "no CONNECT within handshake_timeout: %r" % reason)


@test
def upgrade_from_polling_to_websocket():
    with ws_bus() as bus:
        p = bus.port
        sid = handshake(p)["sid"]
        check_eq(post(p, sid, "40/ipc/up,"), (200, "ok"), "joined over polling")
        check(get(p, sid)[1].startswith("40/ipc/up,"), "CONNECT answered over polling")
        pub = bus.client("pub")
        ws = ws_session(p, sid)
        ws.send_text("2probe")
        check_eq(ws.recv(), "3probe", "probe answered")
        check_eq(get(p, sid), (200, "6"), "polls get noops during the upgrade")
        # Something for the client while upgrading waits for the new transport.
        pub.send({"type": "EMIT", "event": "mid:way", "to": "up", "payload": 1})
        time.sleep(0.2)
        ws.send_text("5")
        m = recv_skip_pings(ws)
        check(m.startswith('42/ipc/up,["mid:way",1'), "queued packet after the upgrade: %r" % m)
        ws.send_text('42/ipc/up,7["ipc:emit",{"event":"up:x","target":"pub","payload":2}]')
        got = [recv_skip_pings(ws) for _ in range(2)]
        check('43/ipc/up,7[{"success":true,"delivered":1}]' in got, got)
        check_eq(pub.recv()["from"], "up", "emit over the upgraded session")
        check_eq(get(p, sid)[0], 400, "polling refused after the upgrade")
        again = RawWS(p, handshake=False)
        check_eq(again.handshake(EIO % "websocket" + "&sid=" + sid)[0], 400, "a second WebSocket for the sid")
        check_eq(bus.stats()["plugins"]["websocket"]["eio_upgrades"], 1, "counted")
        # A probe that never finishes is dropped; polling carries on.
        sid = handshake(p)["sid"]
        probe = ws_session(p, sid)
        probe.send_text("4hello")
        code, _ = closed(probe, "bad probe")
        check_eq(code, 1008, "anything but the upgrade on a probe")
        check_eq(post(p, sid, "40/ipc/still,"), (200, "ok"), "the polling session survives a failed probe")


@test
def socketio_grammar_violations_close_the_session():
    with ws_bus() as bus:
        p = bus.port
        for bad, why in (("4abc", "unknown"), ("42{}", "array"), ('42abc["x"]', "JSON"), ('47', "type"),
                         ('43/ipc/g,["x"]', "ack id"), ('43/ipc/other,1[]', "not joined"), ("", "Engine.IO"), ("7", "Engine.IO"),
                         ("0", "Engine.IO"), ('42/ipc/g,["connect"]', "reserved"), ('42/ipc/g,[]', "empty"),
                         ('42/ipc/g,[1]', "string"), ('41/ipc/g,{}', "DISCONNECT"), ('44/ipc/g,{}', "CONNECT_ERROR"),
                         ('40/ipc/g,[1]', "object"), ('42/ipc/g,99999999999999999999["x"]', "too large"),
                         ('42/ipc/other,["ipc:emit",{}]', "not joined"), ('40/ipc/g,', "second CONNECT")):
            c = joined(p, "/ipc/g")
            c.send_text(bad)
            code, reason = closed(c, bad)
            check_eq(code, 1008, "%r closes the session (%r)" % (bad, reason))
            check(why.lower() in reason.lower(), "%r: reason %r should mention %r" % (bad, reason, why))
        c = ws_session(p)
        c.send_text("40/random")
        m = recv_skip_pings(c)
        check(m.startswith('44/random,{"message":"Invalid namespace'), m)
        c.send_text("40")
        check(recv_skip_pings(c).startswith('44{"message":"Invalid namespace'), "the main namespace is not served")
        c.send_text('40/ipc/fine,{"token":7}')
        check(recv_skip_pings(c).startswith('44/ipc/fine,{"message":"auth.token must be a string'), "auth.token")
        c.send_text('40/ipc/fine,{"any":"auth"}')
        check(recv_skip_pings(c).startswith('40/ipc/fine,{"sid":"'), "other auth members are ignored")
        c.send_text('41/ipc/fine,')
        c.send_text('41/ipc/never-joined,')   # leaving what was never joined is harmless
        c.send_text('40/ipc/fine,')
        check(recv_skip_pings(c).startswith('40/ipc/fine,'), "joined again after leaving")
        check(bus.stats()["plugins"]["websocket"]["sio_bad_packets"] >= 17, "counted")


@test
def binary_frames_and_attachments():
    with ws_bus(extra="subscribe =") as bus:
        p = bus.port
        c = joined(p, "/ipc/bin")
        c.send_text('40/ipc/keep,')
        check(recv_skip_pings(c).startswith("40/ipc/keep,"), "second namespace")
        c.send_text('451-/ipc/bin,["ipc:emit",{"_placeholder":true,"num":0}]')
        c.send_frame(2, b"\x01\x02\x03")
        m = recv_skip_pings(c)
        check(m.startswith('44/ipc/bin,{"message":"binary attachments are not supported'), m)
        c.send_text('42/ipc/keep,3["ipc:emit",{"event":"k:x","payload":1}]')
        got = [recv_skip_pings(c), recv_skip_pings(c)]
        check_eq(got, ['42/ipc/keep,["ipc:ack",{"event":"k:x","target":"broadcast"}]',
                       '43/ipc/keep,3[{"success":true,"delivered":0}]'],
                 "the attachment was dropped and the other namespace carries on")
        c.send_frame(2, b"\x04")
        code, reason = closed(c, "binary")
        check_eq(code, 1003, "a binary frame nobody announced (%r)" % reason)


@test
def a_session_that_stops_polling_is_dropped_as_a_slow_consumer():
    with ws_bus(bus="outbuf_high = 64K\noutbuf_max = 512K\nslow_consumer_timeout = 2s",
                extra="ping_interval = 30s") as bus:
        p = bus.port
        sid = handshake(p)["sid"]
        post(p, sid, "40/ipc/lazy,")
        get(p, sid)
        pub = bus.client("pub")
        pub.sock.settimeout(30)   # paused by the back-pressure until the lazy session is dropped

        def drain():   # the publisher reads its errors (SERVICE_NOT_FOUND once lazy is gone)
            try:
                while pub.sock.recv(65536):
                    pass
            except OSError:
                pass
        threading.Thread(target=drain, daemon=True).start()
        for i in range(2000):
            pub.send({"type": "EMIT", "event": "flood:x", "to": "lazy", "payload": "y" * 500})
        wait_for(lambda: bus.stats()["slowConsumers"] >= 1, 10, what="the slow consumer")
        wait_for(lambda: get(p, sid)[0] == 400, 5, what="the session to be gone")
        pub.send({"type": "CALL", "id": "after", "to": "lexbus", "method": "ping"})
        check_eq(bus.stats()["slowConsumers"], 1, "only the lazy session was a slow consumer")

lbtest.main()
