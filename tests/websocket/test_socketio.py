"""Socket.IO v4 clients on the bus: the real socket.io-client 4.x from npm
(pinned in tests/websocket/package-lock.json, installed by the test with
npm ci) against the real daemon, with unix-socket services on the same
bus.  The Exprsn Bridge vocabulary: namespaces /ipc/<name> as services,
ipc:emit / ipc:ack / ipc:error, ipc:call both ways, ipc:subscribe, CRUD
and jsonlex callbacks, auth tokens, reconnection after a restart, and
binary attachments refused clearly."""
import json
import os
import time

import lbtest
from lbtest import Bus, check, check_eq, test, wait_for
from tokenutil import SECRET, claims, mint
from wstest import Sio, free_port, ws_bus

WS_ONLY = {"transports": ["websocket"]}


def url(bus, name):
    return "http://127.0.0.1:%d/ipc/%s" % (bus.port, name)


def services(bus, token=False):
    name = "lister-%d" % time.time_ns()
    c = bus.client(name, token=mint(claims(name))) if token else bus.client(name)
    r = c.call("lexbus", "services")["data"]
    c.close()
    return {s["name"]: s for s in r}


@test
def websocket_only_emits_both_ways_with_unix_services():
    with ws_bus() as bus, Sio() as sio:
        beta = bus.client("beta", subscribe=["alpha:*"])
        m = sio.connect("a", url(bus, "alpha"), **WS_ONLY)
        check_eq((m["ev"], m["transport"]), ("connect", "websocket"), "connected over WebSocket only")
        s = services(bus)["alpha"]
        check_eq(s["sessions"][0]["transport"], "socket.io", "registered as a socket.io instance")
        check_eq(s["sessions"][0]["metadata"]["namespace"], "/ipc/alpha", "namespace in the metadata")
        # Socket -> unix service, with the delivery count in the callback.
        r = sio.call("a", "ipc:emit", {"event": "alpha:hello", "payload": {"n": 1}, "target": "beta"})
        check_eq(r, [{"success": True, "delivered": 1}], "ack callback")
        ev = beta.recv()
        check_eq((ev["type"], ev["event"], ev["from"], ev["payload"]), ("EVENT", "alpha:hello", "alpha", {"n": 1}),
                 "reached the unix service")
        ack = sio.event("a", "ipc:ack")
        check_eq(ack["args"], [{"event": "alpha:hello", "target": "beta"}], "ipc:ack event")
        # Broadcast (target defaults to broadcast).
        sio.emit("a", "ipc:emit", {"event": "alpha:all", "payload": "x"})
        ev = beta.recv()
        check_eq((ev["event"], "to" in ev), ("alpha:all", False), "a broadcast (no to): %r" % ev)
        # Unix -> socket: service-addressed, and a broadcast the default
        # subscription (>) hears.
        beta.send({"type": "EMIT", "event": "news:one", "to": "alpha", "payload": {"k": "v"}, "id": "ev-1"})
        e = sio.event("a", "news:one")
        check_eq(e["args"][0], {"k": "v"}, "payload first")
        check_eq((e["args"][1]["source"], e["args"][1]["target"], e["args"][1]["id"]), ("beta", "alpha", "ev-1"),
                 "meta second")
        beta.send({"type": "EMIT", "event": "news:two", "payload": 2})
        check_eq(sio.event("a", "news:two")["args"][1]["target"], "broadcast", "broadcast reaches the socket")
        # Failures come back as ipc:error with lexbus's codes.
        sio.emit("a", "ipc:emit", {"event": "x:y", "target": "nobody"})
        err = sio.event("a", "ipc:error")["args"][0]
        check_eq(err["error"], "SERVICE_NOT_FOUND", "unknown target: %r" % err)
        r = sio.call("a", "ipc:emit", {"event": "bad name!", "payload": 1})
        check_eq((r[0]["success"], r[0]["code"]), (False, "INVALID_MESSAGE"), "bad event name: %r" % r)
        r = sio.call("a", "not:ours", 1)
        check_eq(r[0]["code"], "INVALID_MESSAGE", "unknown event: %r" % r)
        check("ipc:emit" in r[0]["error"], r)


@test
def polling_then_upgrade_and_polling_only():
    with ws_bus() as bus, Sio() as sio:
        beta = bus.client("beta")
        m = sio.connect("p", url(bus, "poller"))
        check_eq(m["ev"], "connect", "connected")
        up = sio.expect(lambda m: m["ev"] == "upgrade" and m["id"] == "p", 10, "the upgrade")
        check_eq(up["transport"], "websocket", "upgraded to WebSocket")
        check_eq(sio.call("p", "ipc:emit", {"event": "p:x", "target": "beta", "payload": 1}),
                 [{"success": True, "delivered": 1}], "emit after the upgrade")
        check_eq(beta.recv()["from"], "poller", "from the upgraded socket")
        m = sio.connect("q", url(bus, "longpoll"), transports=["polling"], forceNew=True)
        check_eq((m["ev"], m["transport"]), ("connect", "polling"), "polling only")
        for i in range(20):
            sio.emit("q", "ipc:emit", {"event": "q:%d" % i, "target": "beta", "payload": i})
        got = [beta.recv()["payload"] for _ in range(20)]
        check_eq(got, list(range(20)), "20 emits over polling, in order")
        for i in range(5):
            beta.send({"type": "EMIT", "event": "to:q", "to": "longpoll", "payload": i})
        got = [sio.event("q", "to:q")["args"][0] for _ in range(5)]
        check_eq(got, list(range(5)), "events to a polling client, in order")
        st = bus.stats()["plugins"]["websocket"]
        check(st["eio_upgrades"] >= 1 and st["eio_polling"] >= 2, "stats: %r" % st)


@test
def namespaces_share_one_session_as_separate_services():
    with ws_bus(extra="names.timeline = exprsn-timeline\nprefix = app-") as bus, Sio() as sio:
        sio.connect("t", url(bus, "timeline"), **WS_ONLY)
        sio.connect("u", url(bus, "users"), **WS_ONLY)        # same manager: multiplexed
        s = services(bus)
        check("exprsn-timeline" in s and "app-users" in s, "names.* and prefix: %r" % sorted(s))
        st = bus.stats()["plugins"]["websocket"]
        check_eq((st["sessions"], st["namespaces"]), (1, 2), "two namespaces over one Engine.IO session")
        sio.answer_calls("u", "echo")
        r = sio.call("t", "ipc:call", {"service": "app-users", "method": "get", "params": {"id": 3}})
        check_eq(r[0]["data"]["echo"], {"id": 3}, "a call between two namespaces of one session")
        m = sio.connect("bad", "http://127.0.0.1:%d/other" % bus.port, **WS_ONLY)
        check_eq((m["ev"], m["message"]), ("connect_error", "Invalid namespace (this bridge serves /ipc/<service>)"),
                 "a namespace outside /ipc/")
        sio.cmd(op="close", id="u")
        wait_for(lambda: "app-users" not in services(bus), 5, what="the namespace to leave the bus")
        check("exprsn-timeline" in services(bus), "the other namespace stays")


@test
def ipc_call_both_ways():
    with ws_bus(call_timeout="2s") as bus, Sio() as sio:
        svc = bus.client("unix-svc", methods=["add"])
        sio.connect("c", url(bus, "caller"), **WS_ONLY)
        sio.cmd(op="emit", id="c", event="ipc:call", args=[{"service": "unix-svc", "method": "add", "params": [2, 3]}],
                ack=True, tag="add")
        call = svc.recv()
        check_eq((call["type"], call["from"], call["method"], call["params"]), ("CALL", "caller", "add", [2, 3]),
                 "socket -> unix CALL")
        svc.send({"type": "RESPONSE", "id": call["id"], "status": "success", "data": 5})
        r = sio.expect(lambda m: m["ev"] == "ack" and m["tag"] == "add")["args"]
        check_eq(r, [{"success": True, "data": 5}], "result in the callback")
        r = sio.call("c", "ipc:call", {"service": "unix-svc", "method": "nope"})
        check_eq(r[0]["error"]["code"], "METHOD_NOT_FOUND", "%r" % r)
        r = sio.call("c", "ipc:call", {"service": "unix-svc", "method": "add", "options": {"timeout": 300}})
        svc.recv()   # never answered
        check_eq(r[0]["error"]["code"], "TIMEOUT", "options.timeout is the deadline: %r" % r)
        r = sio.call("c", "ipc:call", {"service": "unix-svc"})
        check_eq(r[0]["error"]["code"], "INVALID_MESSAGE", "no method: %r" % r)
        # Unix -> socket: ipc:call with a callback.
        sio.connect("w", url(bus, "worker"), **WS_ONLY)
        for mode, want in (("echo", ("success", {"echo": {"x": 1}, "method": "work", "from": "unix-svc"})),
                           ("raw", ("success", {"echoed": {"x": 1}})),
                           ("fail", ("error", {"code": "EXECUTION_FAILED", "message": "refused: work"}))):
            sio.answer_calls("w", mode)
            r = svc.call("worker", "work", {"x": 1})
            got = (r["status"], r.get("data") if r["status"] == "success" else r["error"])
            check_eq(got, want, "mode %s" % mode)
            req = sio.expect(lambda m: m["ev"] == "call" and m["id"] == "w")["req"]
            check_eq((req["from"], req["method"], req["params"]), ("unix-svc", "work", {"x": 1}), "ipc:call argument")
            check("deadline" in req["context"], "context: %r" % req)
        sio.answer_calls("w", "none")
        r = svc.call("worker", "work", {}, timeout=6)
        check_eq(r["error"]["code"], "TIMEOUT", "no callback before the deadline: TIMEOUT")


@test
def subscribe_unsubscribe_and_default_subscription():
    with ws_bus(extra="subscribe =") as bus, Sio() as sio:
        pub = bus.client("pub")
        sio.connect("s", url(bus, "subs"), **WS_ONLY)
        r = sio.call("s", "ipc:subscribe", {"events": ["a:*", "b:>"]})
        check_eq(r, [{"success": True, "subscriptions": 2}], "subscribed")
        pub.send({"type": "EMIT", "event": "c:x", "payload": 0})
        pub.send({"type": "EMIT", "event": "a:x", "payload": 1})
        check_eq(sio.event("s", "a:x")["args"][0], 1, "matching broadcast (and none before it)")
        check(not [m for m in sio.seen if m.get("event") == "c:x"], "no default subscription when subscribe is empty")
        r = sio.call("s", "ipc:unsubscribe", {"events": ["a:*"]})
        check_eq(r, [{"success": True, "subscriptions": 1}], "unsubscribed")
        r = sio.call("s", "ipc:subscribe", {"events": ["bad pattern"]})
        check_eq((r[0]["success"], r[0]["code"]), (False, "INVALID_MESSAGE"), "%r" % r)


@test
def crud_and_jsonlex_callbacks_without_a_router():
    # No Lua plugin on this bus: the callbacks get lexbus's errors in the
    # Exprsn shapes ({success: false, error, code}).
    with ws_bus() as bus, Sio() as sio:
        sio.connect("d", url(bus, "data"), **WS_ONLY)
        for ev, arg in (("ipc:create", {"resource": "posts", "data": {"t": 1}}),
                        ("ipc:read", {"resource": "posts", "id": 7}),
                        ("ipc:update", {"resource": "posts", "id": 7, "data": {"t": 2}}),
                        ("ipc:delete", {"resource": "posts", "id": 7})):
            r = sio.call("d", ev, arg)
            check_eq((r[0]["success"], r[0]["code"]), (False, "SERVICE_NOT_FOUND"), "%s: %r" % (ev, r))
        r = sio.call("d", "ipc:jsonlex", {"expression": {"+": [1, 2]}, "context": {}})
        check_eq((r[0]["success"], r[0]["code"]), (False, "METHOD_NOT_FOUND"), "jsonlex: %r" % r)
        r = sio.call("d", "ipc:read", {"id": 7})
        check_eq(r[0]["code"], "INVALID_MESSAGE", "no resource: %r" % r)


def token_ws_bus():
    bus = ws_bus(start=False)
    keyf = os.path.join(bus.dir, "broker.key")
    with open(keyf, "w") as f:
        f.write("main:%s\n" % SECRET)
    os.chmod(keyf, 0o600)
    bus.write_conf(open(bus.conf).read() + "[plugin tokens]\nkey_file = %s\n" % keyf)
    return bus.start()


@test
def auth_token_accepted_and_refused():
    with token_ws_bus() as bus, Sio() as sio:
        m = sio.connect("ok", url(bus, "secure"), auth={"token": mint(claims("secure"))}, **WS_ONLY)
        check_eq(m["ev"], "connect", "a valid broker token: %r" % m)
        check_eq(services(bus, True)["secure"]["sessions"][0]["auth"], "token", "authenticated by the token")
        m = sio.connect("wrong", url(bus, "other"), auth={"token": mint(claims("secure"))}, forceNew=True, **WS_ONLY)
        check_eq((m["ev"], m["data"]["code"]), ("connect_error", "UNAUTHENTICATED"), "token for another name: %r" % m)
        m = sio.connect("forged", url(bus, "secure2"), auth={"token": mint(claims("secure2"), secret="x" * 40)},
                        forceNew=True, **WS_ONLY)
        check_eq(m["data"]["code"], "UNAUTHENTICATED", "bad signature: %r" % m)
        m = sio.connect("none", url(bus, "anon"), forceNew=True, **WS_ONLY)
        check_eq(m["ev"], "connect_error", "no token when an authenticator is loaded: %r" % m)
        check("token" in m["message"], m["message"])
        m = sio.connect("num", url(bus, "anon2"), auth={"token": 5}, forceNew=True, **WS_ONLY)
        check_eq(m["message"], "auth.token must be a string (a broker token)", "%r" % m)
        check("other" not in services(bus, True) and "anon" not in services(bus, True), "nothing refused registered")
        # The accepted socket keeps working.
        # Its default subscription (>) hears its own broadcast: delivered 1.
        check_eq(sio.call("ok", "ipc:emit", {"event": "s:x", "payload": 1}), [{"success": True, "delivered": 1}],
                 "the authenticated socket is served")


@test
def reconnect_after_a_bus_restart():
    port = free_port()
    bus = ws_bus(port=port)
    with Sio() as sio:
        sio.connect("r", url(bus, "phoenix"), reconnection=True, reconnectionDelay=200, reconnectionDelayMax=500,
                    **WS_ONLY)
        check("phoenix" in services(bus), "registered")
        check_eq(bus.stop(), 0, "stopped")
        m = sio.expect(lambda m: m["ev"] == "disconnect" and m["id"] == "r", 10, "the disconnect")
        check(m["reason"] != "io server disconnect", "a restart is not a server-side disconnect (%r)" % m)
        bus.start()
        sio.expect(lambda m: m["ev"] == "reconnect" and m["id"] == "r", 20, "the reconnect")
        sio.expect(lambda m: m["ev"] == "connect" and m["id"] == "r", 10, "the namespace joined again")
        check("phoenix" in services(bus), "registered again after the restart")
        listener = bus.client("listener", subscribe=["back:*"])
        sio.emit("r", "ipc:emit", {"event": "back:again", "payload": 1})
        check_eq(listener.recv()["from"], "phoenix", "served after the restart")
    bus.__exit__(None, None, None)


@test
def binary_attachments_are_refused_clearly():
    with ws_bus() as bus, Sio() as sio:
        sio.connect("b", url(bus, "bin"), **WS_ONLY)
        sio.connect("keep", url(bus, "keeper"), **WS_ONLY)
        sio.cmd(op="emit", id="b", event="ipc:emit", args=[{"event": "b:x", "payload": {"$buffer": [1, 2, 3]}}])
        # sioctl.js sends real binary when asked through a Buffer:
        sio.proc.stdin.write(json.dumps({"op": "emit_binary", "id": "b"}) + "\n")
        sio.proc.stdin.flush()
        m = sio.expect(lambda m: m["ev"] == "connect_error" and m["id"] == "b", 10, "the refusal")
        check("binary attachments are not supported" in m["message"], m["message"])
        check_eq(m["data"]["code"], "INVALID_MESSAGE", "code: %r" % m)
        wait_for(lambda: "bin" not in services(bus), 5, what="the refused namespace to leave")
        check_eq(sio.call("keep", "ipc:emit", {"event": "k:x", "payload": 1})[0]["success"], True,
                 "the session's other namespace carries on")
        check_eq(bus.stats()["plugins"]["websocket"]["binary_refused"], 1, "counted")


@test
def engineio_pongs_keep_namespaces_registered():
    # heartbeat 1s (eviction after 3s), ping_interval 25s: the server pings
    # at the bus's pace once the namespace is registered.
    with ws_bus(heartbeat="1s") as bus, Sio() as sio:
        sio.connect("k", url(bus, "kept"), **WS_ONLY)
        time.sleep(5)
        check("kept" in services(bus), "still registered after 5 s")
        check_eq(sio.call("k", "ipc:emit", {"event": "k:x", "payload": 1})[0]["success"], True, "still served")
        check_eq(bus.stats()["connections"]["evicted"], 0, "nobody evicted")


@test
def the_readme_example_runs():
    """README.md's socket.io-client example, as written, against a real bus."""
    import re
    import subprocess
    from wstest import node_modules
    readme = open(os.path.join(os.environ.get("LEXBUS_SRCDIR", os.path.join(os.path.dirname(__file__), "..", "..")),
                               "README.md")).read()
    section = readme[readme.index("## Browsers and Socket.IO"):]
    js = re.search(r"```js\n(.*?)```", section, re.S).group(1)
    with ws_bus() as bus:
        js = js.replace("127.0.0.1:3010", "127.0.0.1:%d" % bus.port)
        users = bus.client("users", methods=["getUserById"])
        script = os.path.join(bus.dir, "example.js")
        with open(script, "w") as f:
            f.write(js + "\nsetTimeout(() => process.exit(0), 3000);\n")
        p = subprocess.Popen(["node", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, NODE_PATH=node_modules()))
        ev = users.recv(timeout=10)
        check_eq((ev["type"], ev["event"], ev["from"]), ("EVENT", "post:created", "timeline"), "the example's emit")
        call = users.recv(timeout=10)
        check_eq((call["method"], call["params"]), ("getUserById", {"userId": "123"}), "the example's call")
        users.send({"type": "RESPONSE", "id": call["id"], "status": "success", "data": {"name": "Ada"}})
        r = users.call("timeline", "ping", {"x": 1})
        check_eq(r["data"], {"method": "ping", "params": {"x": 1}}, "the example answers calls")
        out, err = p.communicate(timeout=15)
        check("delivered to 1" in out and "{ name: 'Ada' }" in out, "the example's output: %r %r" % (out, err))


lbtest.main()
