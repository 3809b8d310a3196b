"""TLS on the websocket listener, with real certificates from
scripts/gen-certs.sh: https endpoints, wss:///lexbus with
python3-websockets, the real socket.io-client over https (WebSocket only,
and polling then the upgrade) trusting the CA, mutual TLS binding names
to certificates (Socket.IO sessions too), refusals (plain HTTP, no or a
wrong client certificate, handshake limits and timeouts), and SIGHUP
reloading the certificates (a bad one keeps the old)."""
import asyncio
import json
import os
import shutil
import signal
import socket
import ssl
import time

import websockets

import lbtest
from lbtest import check, check_eq, test, wait_for
from tlsutil import certs, client_ctx, p
from wstest import RawWS, Sio, free_port, http, ws_bus

CERTS = certs("svc-a", "svc-b")


def tls_keys(cdir, require=False, ca=True):
    text = "cert = %s\nkey = %s\n" % (p(cdir, "localhost-cert.pem"), p(cdir, "localhost-key.pem"))
    if ca:
        text += "ca = %s\nrequire_client_cert = %s\n" % (p(cdir, "ca-cert.pem"), "yes" if require else "no")
    return text


def tls_ws_bus(extra="", require=False, cdir=CERTS, **kw):
    return ws_bus(extra=tls_keys(cdir, require) + extra, **kw)


def ctx(name=None, cdir=CERTS):
    return client_ctx(cdir, name)


def pem(name, cdir=CERTS):
    with open(p(cdir, name)) as f:
        return f.read()


@test
def https_endpoints_and_wss_lexbus():
    with tls_ws_bus() as bus:
        st, h, body = http(bus.port, "GET", "/health", ctx=ctx())
        check_eq((st, json.loads(body)["status"]), (200, "ok"), "GET /health over https")
        check("listening on https://127.0.0.1:%d" % bus.port in bus.logtext(), "https in the log")
        svc = bus.client("svc", methods=["echo"])

        async def browser():
            async with websockets.connect("wss://localhost:%d/lexbus" % bus.port, ssl=ctx()) as ws:
                await ws.send(json.dumps({"type": "REGISTER", "serviceName": "tls-browser"}))
                check_eq(json.loads(await ws.recv())["type"], "REGISTER_ACK", "registered over wss")
                await ws.send(json.dumps({"type": "CALL", "id": "c1", "to": "svc", "method": "echo", "params": {}}))
                call = await asyncio.get_running_loop().run_in_executor(None, svc.recv)
                svc.send({"type": "RESPONSE", "id": call["id"], "status": "success", "data": {"tls": True}})
                r = json.loads(await asyncio.wait_for(ws.recv(), 5))
                check_eq((r["type"], r["data"]), ("RESPONSE", {"tls": True}), "a call over wss")
                # Messages of several TLS records, both ways.
                big = "x" * 300000
                await ws.send(json.dumps({"type": "CALL", "id": "c2", "to": "svc", "method": "echo", "params": big}))
                call = await asyncio.get_running_loop().run_in_executor(None, svc.recv)
                check_eq(call["params"], big, "300 KB from the browser")
                svc.send({"type": "RESPONSE", "id": call["id"], "status": "success", "data": big + big})
                r = json.loads(await asyncio.wait_for(ws.recv(), 5))
                check_eq(r["data"], big + big, "600 KB to the browser")
        asyncio.run(browser())
        st = bus.stats()["plugins"]["websocket"]
        check_eq((st["tls"], st["clientCertificates"], st["tls_refused"]), (True, "optional", 0), "stats: %r" % st)
        check(st["tls_handshakes"] >= 2 and "localhost" in st["certSubject"], "stats: %r" % st)


@test
def socketio_client_over_https_trusting_the_ca():
    with tls_ws_bus() as bus, Sio() as sio:
        svc = bus.client("svc", subscribe=["to-sio:*"])
        url = "https://localhost:%d/ipc/tls-sio" % bus.port
        m = sio.connect("ws", url, transports=["websocket"], ca=pem("ca-cert.pem"))
        check_eq((m["ev"], m["transport"]), ("connect", "websocket"), "wss with the CA: %r" % m)
        m = sio.connect("poll", "https://localhost:%d/ipc/tls-poll" % bus.port, ca=pem("ca-cert.pem"), forceNew=True)
        check_eq(m["ev"], "connect", "https polling: %r" % m)
        sio.expect(lambda x: x["ev"] == "upgrade" and x["id"] == "poll", 10, "the upgrade to wss")
        st = bus.stats()["plugins"]["websocket"]
        check_eq((st["eio_polling"], st["eio_upgrades"]), (1, 1), "polled over https, then upgraded: %r" % st)
        ack = sio.call("ws", "ipc:emit", {"event": "to-sio:hello", "payload": {"n": 1}, "target": "svc"})
        check_eq(ack, [{"success": True, "delivered": 1}], "ipc:emit over wss")
        check_eq(svc.recv()["payload"], {"n": 1}, "the unix service got it")
        svc.send({"type": "EMIT", "event": "news:x", "payload": "hi"})
        for sid in ("ws", "poll"):
            ev = sio.event(sid, "news:x")
            check_eq(ev["args"][0], "hi", "a broadcast to %s" % sid)
        bad = sio.connect("untrusted", url, transports=["websocket"], forceNew=True)
        check_eq(bad["ev"], "connect_error", "without the CA the client refuses the certificate: %r" % bad)
        wait_for(lambda: "TLS handshake refused from" in bus.logtext(), 5, what="the refusal logged")


@test
def plain_http_to_a_tls_listener_is_refused_clearly():
    with tls_ws_bus() as bus:
        c = RawWS(bus.port, handshake=False)
        c.sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        c.sock.settimeout(5)
        try:
            got = c.sock.recv(100)
        except ConnectionResetError:
            got = b""
        check(not got.startswith(b"HTTP/"), "no HTTP answer in clear: %r" % got)
        wait_for(lambda: "does not speak TLS" in bus.logtext(), 5, what="the reason in the log")
        check_eq(http(bus.port, "GET", "/health", ctx=ctx())[0], 200, "TLS clients still served")


@test
def mutual_tls_binds_names_to_certificates():
    with tls_ws_bus(require=True) as bus, Sio() as sio:
        check_eq(lbtest.RawClient.unix(bus.sock).register("x").get("type"), "REGISTER_ACK", "unix unaffected")
        try:
            http(bus.port, "GET", "/health", ctx=ctx())
            got = "answered"
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError, OSError, lbtest.TestFailure) as e:
            got = type(e).__name__
        check(got != "answered", "no client certificate: refused (%s)" % got)
        c = RawWS(bus.port, ctx=ctx("svc-a"))
        c.send_text(json.dumps({"type": "REGISTER", "serviceName": "svc-b"}))
        e = json.loads(c.recv())
        check_eq((e["type"], e["error"]["code"]), ("ERROR", "FORBIDDEN"), "svc-a's certificate cannot be svc-b")
        c.send_text(json.dumps({"type": "REGISTER", "serviceName": "svc-a"}))
        check_eq(json.loads(c.recv())["type"], "REGISTER_ACK", "svc-a's certificate is svc-a")
        opts = dict(transports=["websocket"], ca=pem("ca-cert.pem"), cert=pem("svc-b-cert.pem"),
                    key=pem("svc-b-key.pem"))
        m = sio.connect("b", "https://localhost:%d/ipc/svc-b" % bus.port, **opts)
        check_eq(m["ev"], "connect", "svc-b's certificate joins /ipc/svc-b: %r" % m)
        m = sio.connect("b2", "https://localhost:%d/ipc/svc-a" % bus.port, **opts)
        check_eq((m["ev"], m["data"]["code"]), ("connect_error", "FORBIDDEN"), "but not /ipc/svc-a: %r" % m)
        # A polling session belongs to the certificate that opened it.
        st, _, body = http(bus.port, "GET", "/socket.io/?EIO=4&transport=polling", ctx=ctx("svc-a"))
        sid = json.loads(body[1:])["sid"]
        path = "/socket.io/?EIO=4&transport=polling&sid=" + sid
        st, _, _ = http(bus.port, "POST", path, body="40/ipc/svc-a,", ctx=ctx("svc-b"),
                        headers={"Content-Type": "text/plain;charset=UTF-8"})
        check_eq(st, 403, "another certificate cannot use the session")
        st, _, _ = http(bus.port, "POST", path, body="40/ipc/svc-a,", ctx=ctx("svc-a"),
                        headers={"Content-Type": "text/plain;charset=UTF-8"})
        check_eq(st, 200, "its own certificate can")
        st, _, body = http(bus.port, "GET", path, ctx=ctx("svc-a"))
        check(body.startswith(b'40/ipc/svc-a,{"sid"'), "joined as svc-a: %r" % body)
        check_eq(bus.stats()["plugins"]["websocket"]["clientCertificates"], "required", "stats")


@test
def handshake_limits_and_timeouts():
    with tls_ws_bus(extra="max_handshaking_per_address = 2\nheader_timeout = 1s") as bus:
        stalled = [socket.create_connection(("127.0.0.1", bus.port)) for _ in range(2)]
        wait_for(lambda: bus.stats()["plugins"]["websocket"]["handshaking"] == 2, 5, what="two handshakes")
        third = socket.create_connection(("127.0.0.1", bus.port))
        third.settimeout(5)
        try:
            check_eq(third.recv(10), b"", "a third from the same address is closed at accept")
        except ConnectionResetError:
            pass
        st = bus.stats()["plugins"]["websocket"]
        check_eq(st["over_handshaking"], 1, "counted: %r" % st)
        for s in stalled:
            s.settimeout(5)
            t = time.time()
            try:
                check_eq(s.recv(10), b"", "a stalled handshake is dropped")
            except ConnectionResetError:
                pass
            check(time.time() - t < 4, "within header_timeout")
        wait_for(lambda: bus.stats()["plugins"]["websocket"]["handshaking"] == 0, 5, what="slots freed")
        check_eq(http(bus.port, "GET", "/health", ctx=ctx())[0], 200, "served after the stalled ones")


@test
def sighup_reloads_certificates():
    cdir = certs(out=os.path.join(os.path.dirname(CERTS), "reload-certs"))
    with tls_ws_bus(cdir=cdir) as bus:
        old_ca = client_ctx(cdir)
        check_eq(http(bus.port, "GET", "/health", ctx=old_ca)[0], 200, "the first certificate")
        keep = RawWS(bus.port, ctx=old_ca)
        keep.send_text(json.dumps({"type": "REGISTER", "serviceName": "keeps-old"}))
        check_eq(json.loads(keep.recv())["type"], "REGISTER_ACK", "an open connection")
        saved = os.path.join(cdir, "old-ca.pem")
        shutil.copy(p(cdir, "ca-cert.pem"), saved)
        certs(out=cdir, force=True)   # a new CA, a new server certificate
        log = bus.reload()
        check("certificates reloaded" in log and "configuration reloaded" in log, log)
        check_eq(http(bus.port, "GET", "/health", ctx=client_ctx(cdir))[0], 200, "the new CA verifies now")
        try:
            http(bus.port, "GET", "/health", ctx=client_ctx(cdir, ca=saved))
            check(False, "the old CA must not verify the new certificate")
        except ssl.SSLCertVerificationError:
            pass
        keep.send_text(json.dumps({"type": "CALL", "id": "p", "to": "lexbus", "method": "ping"}))
        check_eq(json.loads(keep.recv())["data"]["pong"], True, "the open connection keeps its session")
        conf = open(bus.conf).read()
        log = bus.reload(conf.replace(p(cdir, "localhost-key.pem"), p(cdir, "missing-key.pem")))
        check("reload failed, old configuration kept" in log and "missing-key.pem" in log, log)
        check_eq(http(bus.port, "GET", "/health", ctx=client_ctx(cdir))[0], 200, "the good certificate kept")
        log = bus.reload(conf.replace("require_client_cert = no", "require_client_cert = yes"))
        check("require_client_cert changed to yes: refused" in log, log)
        check_eq(http(bus.port, "GET", "/health", ctx=client_ctx(cdir))[0], 200, "still no client certificate needed")
        plain = "".join(l + "\n" for l in conf.splitlines() if not l.startswith(("cert", "key", "ca", "require")))
        log = bus.reload(plain)
        check("switching TLS off needs a restart" in log and "old configuration kept" in log, log)
        keep.close()


@test
def tls_keys_without_a_certificate_are_a_config_error():
    port = free_port()
    b = lbtest.Bus(plugins="[plugin websocket]\nlisten = 127.0.0.1:%d\nca = %s\n" % (port, p(CERTS, "ca-cert.pem")),
                   start=False)
    r = b.start(wait=False)
    rc = r.proc.wait(10)
    check_eq(rc, 1, "start-up fails")
    check("ca: is a TLS setting: give cert and key too" in b.logtext(), b.logtext()[-500:])
    shutil.rmtree(b.dir, ignore_errors=True)


lbtest.main()
