"""The websocket transport's plain WebSocket path (/lexbus) through the real
daemon, with a real third-party client (Debian's python3-websockets) and
unix-socket services on the same bus: the whole vocabulary, the same
errors, heartbeats by WebSocket ping/pong, fragmented messages,
back-pressure and SLOW_CONSUMER, IPv6, SIGTERM, configuration errors."""
import asyncio
import json
import socket
import subprocess
import time

import websockets

import lbtest
from lbtest import Bus, check, check_eq, test, wait_for
from wstest import RawWS, WSClosed, free_port, ws_bus, ws_section


def ws_url(bus, path="/lexbus"):
    return "ws://127.0.0.1:%d%s" % (bus.port, path)


async def recv_json(ws, timeout=5.0):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def recv_type(ws, t, timeout=5.0):
    end = time.time() + timeout
    while True:
        m = await recv_json(ws, max(0.05, end - time.time()))
        if m.get("type") == t:
            return m


@test
def register_call_emit_with_unix_services():
    with ws_bus() as bus:
        svc = bus.client("svc", methods=["echo"], subscribe=["from-browser:*"])

        async def browser():
            async with websockets.connect(ws_url(bus)) as ws:
                await ws.send(json.dumps({"type": "REGISTER", "serviceName": "browser", "subscribe": ["news:*"]}))
                ack = await recv_json(ws)
                check_eq((ack["type"], ack["serviceName"]), ("REGISTER_ACK", "browser"), "registered over WebSocket")
                await ws.send(json.dumps({"type": "CALL", "id": "c1", "to": "svc", "method": "echo", "params": {"n": 7}}))
                call = await asyncio.get_running_loop().run_in_executor(None, svc.recv)
                check_eq((call["type"], call["from"], call["params"]), ("CALL", "browser", {"n": 7}), "call reached unix")
                svc.send({"type": "RESPONSE", "id": "c1", "status": "success", "data": {"echo": 7}})
                r = await recv_type(ws, "RESPONSE")
                check_eq((r["id"], r["data"]), ("c1", {"echo": 7}), "response back over WebSocket")
                svc.send({"type": "EMIT", "event": "news:today", "payload": "hi"})
                ev = await recv_type(ws, "EVENT")
                check_eq((ev["event"], ev["from"], ev["payload"]), ("news:today", "svc", "hi"), "broadcast from unix")
                await ws.send(json.dumps({"type": "EMIT", "event": "from-browser:click", "payload": {"x": 1},
                                          "ack": True, "id": "e1"}))
                a = await recv_type(ws, "ACK")
                check_eq((a["id"], a["delivered"]), ("e1", 1), "delivery ack")
                e = await asyncio.get_running_loop().run_in_executor(None, svc.recv)
                check_eq((e["event"], e["from"], e["payload"]), ("from-browser:click", "browser", {"x": 1}),
                         "event from the browser")
                await ws.send(json.dumps({"type": "CALL", "id": "c2", "to": "lexbus", "method": "services"}))
                s = await recv_type(ws, "RESPONSE")
                b = [x for x in s["data"] if x["name"] == "browser"][0]
                check_eq(b["sessions"][0]["transport"], "websocket", "listed as a websocket session")
        asyncio.run(browser())


@test
def same_rules_and_errors_as_unix():
    with ws_bus() as bus:
        async def run():
            async with websockets.connect(ws_url(bus)) as ws:
                await ws.send(json.dumps({"type": "CALL", "id": "x", "to": "svc", "method": "m"}))
                r = await recv_json(ws)
                check_eq((r["type"], r["status"], r["error"]["code"]), ("RESPONSE", "error", "NOT_REGISTERED"),
                         "nothing before REGISTER")
                await ws.send("{not json")
                e = await recv_json(ws)
                check_eq((e["type"], e["error"]["code"]), ("ERROR", "INVALID_MESSAGE"), "bad JSON")
                # U+0780 is 0xde 0x80 in UTF-8: a MessagePack map's first byte.  Text is
                # JSON, even as the first message: refused, and the connection stays JSON.
                async with websockets.connect(ws_url(bus)) as ws2:
                    await ws2.send("\u0780" + json.dumps({"type": "HEARTBEAT"}))
                    e = await recv_json(ws2)
                    check_eq((e["type"], e["error"]["code"]), ("ERROR", "INVALID_MESSAGE"), "not JSON: %r" % e)
                    await ws2.send(json.dumps({"type": "CALL", "id": "j", "to": "lexbus", "method": "ping"}))
                    r = await recv_json(ws2)
                    check_eq((r["type"], r["id"], r["error"]["code"]), ("RESPONSE", "j", "NOT_REGISTERED"),
                             "still JSON: %r" % r)
                await ws.send(json.dumps({"type": "REGISTER", "serviceName": "w1"}))
                check_eq((await recv_json(ws))["type"], "REGISTER_ACK", "still open after errors")
                await ws.send(json.dumps({"type": "CALL", "id": "y", "to": "nobody", "method": "m"}))
                r = await recv_json(ws)
                check_eq(r["error"]["code"], "SERVICE_NOT_FOUND", "missing service")
                await ws.send(json.dumps({"type": "EMIT", "event": "a:b", "from": "liar"}))
                e = await recv_json(ws)
                check_eq(e["error"]["code"], "FORBIDDEN", "from is the bus's")
                await ws.send(json.dumps({"type": "CALL", "id": "p", "to": "lexbus", "method": "ping"}))
                check_eq((await recv_json(ws))["data"]["pong"], True, "system service over WebSocket")
        asyncio.run(run())


@test
def subprotocol_lexbus_is_agreed_when_asked():
    with ws_bus() as bus:
        async def run():
            async with websockets.connect(ws_url(bus), subprotocols=["lexbus"]) as ws:
                check_eq(ws.subprotocol, "lexbus", "subprotocol")
            async with websockets.connect(ws_url(bus)) as ws:
                check_eq(ws.subprotocol, None, "no subprotocol unless asked")
        asyncio.run(run())


@test
def websocket_pongs_count_as_heartbeats():
    # heartbeat 1s: silent connections are evicted after 3s.  The server
    # pings at least once per heartbeat interval; a client that answers
    # (every browser and python-websockets does) stays, one that does not
    # is evicted like a silent unix client.
    with ws_bus(extra="ping_interval = 25s", heartbeat="1s") as bus:
        async def run():
            async with websockets.connect(ws_url(bus), ping_interval=None) as ws:
                await ws.send(json.dumps({"type": "REGISTER", "serviceName": "quiet-browser"}))
                check_eq((await recv_json(ws))["type"], "REGISTER_ACK", "registered")
                await asyncio.sleep(5)
                await ws.send(json.dumps({"type": "CALL", "id": "p", "to": "lexbus", "method": "ping"}))
                check_eq((await recv_type(ws, "RESPONSE"))["data"]["pong"], True, "still there after 5 s")
        asyncio.run(run())
        raw = RawWS(bus.port)
        raw.send_text(json.dumps({"type": "REGISTER", "serviceName": "deaf"}))
        check_eq(json.loads(raw.recv())["type"], "REGISTER_ACK", "raw registered")
        seen = []
        end = time.time() + 8
        code = None
        while time.time() < end:
            try:
                op, p = raw.recv_frame(timeout=max(0.1, end - time.time()))
            except WSClosed:
                break
            seen.append(op)
            if op == 1:
                m = json.loads(p)
                if m.get("type") == "ERROR":
                    check_eq(m["error"]["code"], "TIMEOUT", "evicted with TIMEOUT")
            if op == 8:
                code = int.from_bytes(p[:2], "big")
                break
        check(9 in seen, "the server pinged: %r" % seen)
        check_eq(code, 1008, "closed after the eviction")


@test
def fragmented_and_large_messages():
    with ws_bus(bus="max_frame = 2M", extra="max_message = 2M") as bus:
        sub = bus.client("sub", subscribe=["big:*"])
        raw = RawWS(bus.port)
        raw.send_text(json.dumps({"type": "REGISTER", "serviceName": "frag"}))
        raw.recv()
        body = json.dumps({"type": "EMIT", "event": "big:one", "payload": "x" * 300000}).encode()
        # Text frame + continuations, with a ping between two fragments (allowed).
        raw.send_frame(1, body[:1000], fin=False)
        raw.send_frame(9, b"mid")
        raw.send_frame(0, body[1000:200000], fin=False)
        raw.send_frame(0, body[200000:], fin=True)
        op, p = raw.recv_frame()
        check_eq((op, p), (10, b"mid"), "pong between fragments")
        ev = sub.recv(timeout=10)
        check_eq((ev["event"], len(ev["payload"])), ("big:one", 300000), "reassembled")
        # A 16-bit length of exactly 126 and a 64-bit one; empty fragments.
        raw.send_frame(1, b"", fin=False)
        raw.send_frame(0, json.dumps({"type": "EMIT", "event": "big:two", "payload": "y" * 70000}), fin=True)
        check_eq(len(sub.recv()["payload"]), 70000, "64-bit length")


def flood_until_slow_consumer(bus, frame, probe):
    pub = bus.client("pub-%d" % time.time_ns())
    pub.sock.setblocking(False)
    end, next_check = time.time() + 30, 0
    while time.time() < end:
        try:
            pub.sock.send(frame)
        except BlockingIOError:
            time.sleep(0.02)
        if time.time() > next_check:
            next_check = time.time() + 0.5
            st = probe.call("lexbus", "stats")["data"]
            if st["slowConsumers"] >= 1:
                return pub, st
    raise lbtest.TestFailure("the reader that stopped was never closed as a slow consumer")


def read_out(raw):
    """Everything the server still sends, to its close: (events, last message, close code)."""
    code, reason, texts = raw.expect_close(timeout=20)
    msgs = [json.loads(t) for t in texts]   # whole frames only: each parses
    return sum(m["type"] == "EVENT" for m in msgs), msgs[-1], code


@test
def back_pressure_and_slow_consumer():
    # Point-to-point EMITs to a reader that stopped pause their publisher
    # (broadcasts never do); past slow_consumer_timeout the reader is
    # closed, and its SLOW_CONSUMER ERROR comes right after whole frames.
    with ws_bus(bus="outbuf_high = 64K\noutbuf_max = 16M\nslow_consumer_timeout = 2s") as bus:
        raw = RawWS(bus.port)
        raw.send_text(json.dumps({"type": "REGISTER", "serviceName": "slow"}))
        raw.recv()
        probe = bus.client("probe")
        frame = lbtest.frame({"type": "EMIT", "event": "flood:x", "to": "slow", "payload": "z" * 1000}) * 16
        pub, st = flood_until_slow_consumer(bus, frame, probe)
        check(st["senderPauses"] >= 1, "the publisher was paused first: %r" % st)
        _, last, code = read_out(raw)
        check_eq((last["type"], last["error"]["code"], code), ("ERROR", "SLOW_CONSUMER", 1008),
                 "the ERROR, then the close: %r" % last)
        pub.sock.setblocking(True)
        check_eq(pub.call("lexbus", "ping")["data"]["pong"], True, "the publisher is served again")
        raw.close()


@test
def slow_subscriber_gets_slow_consumer_before_the_queue():
    # A broadcast subscriber that stops reading: its queue grows to
    # outbuf_max; the bus drops what is queued (whole frames, the discard
    # op) and the SLOW_CONSUMER ERROR arrives after at most what the kernel
    # held and one 64 KiB stretch of frames, not after megabytes.
    with ws_bus(bus="outbuf_max = 4M") as bus:
        raw = RawWS(bus.port)
        raw.send_text(json.dumps({"type": "REGISTER", "serviceName": "slow-sub", "subscribe": ["flood:*"]}))
        raw.recv()
        probe = bus.client("probe")
        frame = lbtest.frame({"type": "EMIT", "event": "flood:x", "payload": "z" * 1000}) * 16
        pub, st = flood_until_slow_consumer(bus, frame, probe)
        queued = st["messagesOut"]["EVENT"]
        read, last, code = read_out(raw)
        check_eq((last["type"], last["error"]["code"], code), ("ERROR", "SLOW_CONSUMER", 1008), "ERROR then close")
        check(queued - read >= 2000, "at least 2 MB of queued events dropped (queued %d, read %d)" % (queued, read))
        raw.close()


@test
def ipv6_and_several_listeners():
    try:
        s = socket.socket(socket.AF_INET6)
        s.bind(("::1", 0))
        s.close()
    except OSError:
        print("# no IPv6 on this machine: only the IPv4 listener is checked")
        return
    p4, p6 = free_port(), free_port()
    plugins = "[plugin websocket]\nlisten = 127.0.0.1:%d\nlisten = [::1]:%d\n" % (p4, p6)
    with Bus(plugins=plugins) as bus:
        async def run():
            for url in ("ws://127.0.0.1:%d/lexbus" % p4, "ws://[::1]:%d/lexbus" % p6):
                async with websockets.connect(url) as ws:
                    await ws.send(json.dumps({"type": "CALL", "id": "p", "to": "lexbus", "method": "ping"}))
                    check_eq((await recv_json(ws))["type"], "RESPONSE", url)
        asyncio.run(run())
        check("[::1]:%d" % p6 in bus.logtext(), "IPv6 listener logged")


@test
def sigterm_closes_websockets_cleanly():
    bus = ws_bus()
    raw = RawWS(bus.port)
    raw.send_text(json.dumps({"type": "REGISTER", "serviceName": "bye"}))
    raw.recv()
    bus.send_signal(15)
    code, reason, texts = raw.expect_close(timeout=8)
    check_eq(code, 1001, "going away at shutdown (%r %r)" % (reason, texts))
    check_eq(bus.proc.wait(10), 0, "lexbusd exit status")
    bus.check_sanitizers()
    bus.__exit__(None, None, None)


@test
def configuration_errors_name_file_and_line():
    port = free_port()
    bus = Bus(start=False, plugins=ws_section(port))

    def fails(extra, want, listen=None):
        bus.write_conf("[bus]\nnode = n\n" + ws_section(port, extra, listen=listen))
        r = subprocess.run([lbtest.LEXBUSD, "-t", "-c", bus.conf], capture_output=True, text=True, timeout=20)
        out = r.stdout + r.stderr
        check(r.returncode != 0 and "websocket" in out and want in out, "%r: %s" % (want, out))

    fails("", "not host:port", listen="nowhere")
    fails("", "not host:port", listen="127.0.0.1")
    fails("pth = /x", "unknown key 'pth'")
    fails("path = lexbus", "must be a path")
    fails("allowed_origins = example.com", "is not *, same-origin or an origin")
    fails("names.%s = x" % ("n" * 200), "after names. must be")
    fails("names.timeline = bad name!", "is not a service name")
    fails("subscribe = a:>:b", "is not an event pattern")
    fails("max_header = 10", "must be 1K to 1M")
    fails("ping_interval = 0", "must be 50ms to 1h")
    fails("demo = yes\ndemo_file = /nonexistent/page.html", "cannot be read")
    bus.write_conf("[bus]\nnode = n\n" + ws_section(port, "allowed_origins = https://app.example.com, same-origin\n"
                                                        "names.timeline = exprsn-timeline\nprefix = x-\n"
                                                        "subscribe = a:*, b:>\nmax_connections = 5\n"))
    r = subprocess.run([lbtest.LEXBUSD, "-t", "-c", bus.conf], capture_output=True, text=True, timeout=20)
    check_eq(r.returncode, 0, "valid config: " + r.stdout + r.stderr)
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    bus.write_conf("[bus]\nnode = n\n" + ws_section(holder.getsockname()[1]))
    r = subprocess.run([lbtest.LEXBUSD, "-c", bus.conf], capture_output=True, text=True, timeout=20)
    check(r.returncode != 0 and "cannot listen on" in r.stdout + r.stderr, r.stdout + r.stderr)
    holder.close()
    bus.__exit__(None, None, None)


lbtest.main()
