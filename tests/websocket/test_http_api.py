"""The operators' endpoints on the websocket listener: /health and
/api/ipc/stats field by field, /metrics parsed by a real Prometheus text
parser (Debian's python3-prometheus-client), every endpoint switchable
off, SIGHUP reloading the listener's settings."""
import json
import signal
import threading
import time

from prometheus_client.parser import text_string_to_metric_families

import lbtest
from lbtest import check, check_eq, test, wait_for
from wstest import RawWS, Sio, http, ws_bus


def get_json(port, path, **kw):
    st, h, body = http(port, "GET", path, **kw)
    check(h.get("content-type", "").startswith("application/json"), "content type: %r" % h)
    return st, json.loads(body)


def ws_register(bus, name):
    c = RawWS(bus.port)
    c.send_text(json.dumps({"type": "REGISTER", "serviceName": name}))
    check_eq(json.loads(c.recv())["type"], "REGISTER_ACK", "registered")
    return c


def answer_calls(ws, delays):
    """Answers the CALLs `ws` receives, the nth after delays[n] seconds."""
    def run():
        for d in delays:
            m = json.loads(ws.recv(timeout=10))
            time.sleep(d)
            ws.send_text(json.dumps({"type": "RESPONSE", "id": m["id"], "status": "success", "data": {"n": 1}}))
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def bus_traffic(bus):
    """A unix client, a /lexbus browser, a Socket.IO namespace; two calls
    from unix to the browser (one answered after 0.6 s), one to nobody."""
    unix = bus.client("unix-a")
    browser = ws_register(bus, "browser-a")
    t = answer_calls(browser, [0, 0.6])
    for _ in range(2):
        check_eq(unix.call("browser-a", "echo", timeout=10)["status"], "success", "call answered")
    t.join(10)
    check_eq(unix.call("nobody", "m")["error"]["code"], "SERVICE_NOT_FOUND", "call to nobody")
    return unix, browser


@test
def health_and_stats_field_by_field():
    with ws_bus() as bus, Sio() as sio:
        st, h = get_json(bus.port, "/health")
        check_eq(st, 200, "health status")
        check_eq((h["status"], h["node"], h["connections"], h["services"]), ("ok", "test-node", 0, 0), "idle: %r" % h)
        check(isinstance(h["uptime"], int) and h["uptime"] >= 0, "uptime: %r" % h)
        unix, browser = bus_traffic(bus)
        sio.connect("s", "http://127.0.0.1:%d/ipc/sock-b" % bus.port, transports=["websocket"])
        st, h = get_json(bus.port, "/health")
        check_eq((h["connections"], h["services"]), (3, 3), "unix, /lexbus and Socket.IO, bus-wide: %r" % h)
        st, s = get_json(bus.port, "/api/ipc/stats")
        check_eq(st, 200, "stats status")
        check_eq((s["activeServices"], sorted(s["services"]), s["activeConnections"]),
                 (3, ["browser-a", "sock-b", "unix-a"], 3), "the Exprsn fields, bus-wide: %r" % s)
        by = {x["service"]: x for x in s["connections"]}
        check_eq(sorted(by), ["browser-a", "sock-b"], "connections: this listener's own sockets")
        check_eq((by["browser-a"]["transport"], by["sock-b"]["transport"], by["sock-b"]["namespace"]),
                 ("websocket", "socket.io", "/ipc/sock-b"), "connections: %r" % s["connections"])
        check(by["browser-a"]["address"].startswith("127.0.0.1:") and isinstance(by["browser-a"]["id"], int), by)
        check_eq(s["rateLimits"], {"limited": 0}, "no RATE_LIMITED refusals")
        lx = s["lexbus"]
        check_eq((lx["node"], lx["connectionsByTransport"], lx["socketIoNamespaces"], lx["engineIoSessions"]),
                 ("test-node", {"unix": 1, "websocket": 1, "socket.io": 1}, 1, 1), "lexbus's part: %r" % lx)
        check_eq(lx["services"]["browser-a"], {"instances": 1, "remoteInstances": 0, "calls": 2, "events": 0},
                 "per service")
        check_eq((lx["calls"]["inFlight"], lx["calls"]["started"], lx["calls"]["completed"]), (0, 2, 2), "calls")
        check_eq(lx["errors"], {"SERVICE_NOT_FOUND": 1}, "errors by code")
        # The same figures as `lexbus stats`, field by field (its own CALL
        # is counted in before it answers).
        ref = unix.call("lexbus", "stats")["data"]
        check_eq(lx["messages"]["received"]["REGISTER"], ref["messagesIn"]["REGISTER"], "REGISTERs received")
        check_eq(lx["messages"]["received"]["CALL"] + 1, ref["messagesIn"]["CALL"], "CALLs received")
        check_eq(lx["messages"]["received"]["RESPONSE"], ref["messagesIn"]["RESPONSE"], "RESPONSEs received")
        for t in ("REGISTER_ACK", "CALL", "RESPONSE"):
            check_eq(lx["messages"]["sent"][t], ref["messagesOut"][t], t + " sent")
        check_eq(lx["connectionsByTransport"], {k: v for k, v in ref["connections"]["byTransport"].items() if v},
                 "connections by transport")
        check_eq((lx["subscriptions"], lx["slowConsumers"]), (ref["subscriptions"], ref["slowConsumers"]), "the rest")
        check(lx["bytes"]["received"] < ref["bytesIn"] and lx["bytes"]["sent"] == ref["bytesOut"], "bytes: %r" % lx)
        browser.close()
        st, _, _ = http(bus.port, "GET", "/health", headers={"Origin": "http://elsewhere.example"})
        check_eq(st, 200, "health answers any origin (development)")


@test
def metrics_parse_as_prometheus_text():
    with ws_bus() as bus:
        unix, browser = bus_traffic(bus)
        http(bus.port, "GET", "/nope")
        st, h, body = http(bus.port, "GET", "/metrics")
        check_eq(st, 200, "metrics status")
        check(h["content-type"].startswith("text/plain; version=0.0.4"), h)
        text = body.decode()
        fams = {f.name: f for f in text_string_to_metric_families(text)}
        for name, typ in (("lexbus_messages_received", "counter"), ("lexbus_messages_sent", "counter"),
                          ("lexbus_errors", "counter"), ("lexbus_connections", "gauge"),
                          ("lexbus_calls_in_flight", "gauge"), ("lexbus_call_duration_seconds", "histogram"),
                          ("lexbus_bytes_received", "counter"), ("lexbus_bytes_sent", "counter"),
                          ("lexbus_service_instances", "gauge"), ("lexbus_service_calls", "counter"),
                          ("lexbus_up", "gauge"), ("lexbus_plugin_websocket_http_errors", "counter"),
                          ("lexbus_plugin_websocket_sockets", "gauge")):
            check(name in fams, "family %s in %s" % (name, sorted(fams)))
            check_eq(fams[name].type, typ, name)
            check(fams[name].documentation, "HELP for " + name)

        def samples(fam, label=None, suffix=""):
            return {(s.labels.get(label) if label else s.name): s.value for s in fams[fam].samples
                    if s.name.endswith(suffix)}
        check_eq(samples("lexbus_connections", "transport"), {"unix": 1.0, "websocket": 1.0},
                 "connections by transport, bus-wide")
        recv = samples("lexbus_messages_received", "type", "_total")
        check_eq((recv["REGISTER"], recv["CALL"], recv["RESPONSE"], recv["invalid"]), (2.0, 3.0, 2.0, 0.0),
                 "messages received by type: %r" % recv)
        sent = samples("lexbus_messages_sent", "type", "_total")
        check_eq((sent["REGISTER_ACK"], sent["CALL"], sent["RESPONSE"]), (2.0, 2.0, 3.0), "sent by type: %r" % sent)
        errs = samples("lexbus_errors", "code", "_total")
        check_eq((errs["SERVICE_NOT_FOUND"], sum(errs.values())), (1.0, 1.0), "errors by code")
        check_eq(samples("lexbus_calls_in_flight")["lexbus_calls_in_flight"], 0.0, "no call in flight")
        hist = {s.labels.get("le", s.name): s.value for s in fams["lexbus_call_duration_seconds"].samples}
        check_eq((hist["0.5"], hist["2.5"], hist["+Inf"], hist["lexbus_call_duration_seconds_count"]),
                 (1.0, 2.0, 2.0, 2.0), "one call under 0.5 s, one of 0.6 s: %r" % hist)
        check(0.6 <= hist["lexbus_call_duration_seconds_sum"] < 3, "sum: %r" % hist)
        check(samples("lexbus_bytes_received", suffix="_total")["lexbus_bytes_received_total"] > 0, "bytes in")
        check_eq(samples("lexbus_service_instances", "service"), {"unix-a": 1.0, "browser-a": 1.0}, "per service")
        check_eq(samples("lexbus_service_calls", "service", "_total")["browser-a"], 2.0, "calls per service")
        check_eq(samples("lexbus_plugin_websocket_http_errors", suffix="_total"),
                 {"lexbus_plugin_websocket_http_errors_total": 1.0}, "the 404 counted, per plugin")
        check(text.count("# TYPE lexbus_connections ") == 1, "one TYPE line per family")
        browser.close()


@test
def health_says_503_while_draining():
    # A request being read when SIGTERM comes still gets its answer,
    # 503 and Connection: close; idle sockets are closed at once, so the
    # daemon exits without waiting for them.
    with ws_bus() as bus:
        busy, idle = RawWS(bus.port, handshake=False), RawWS(bus.port, handshake=False)
        busy.sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        time.sleep(0.3)   # the daemon has read the first half
        t = time.time()
        bus.send_signal(signal.SIGTERM)
        time.sleep(0.1)
        busy.sock.sendall(b"\r\n")
        st, hdrs = busy.read_head()
        body = json.loads(busy.read_body())
        check_eq((st, body["status"], hdrs.get("connection")), (503, "draining", "close"), "draining: %r" % body)
        idle.sock.settimeout(5)
        check_eq(idle.sock.recv(10), b"", "the idle socket was closed")
        check_eq(bus.proc.wait(10), 0, "exit status")
        check(time.time() - t < 1.8, "exited without waiting out the 2 s drain (%.2fs)" % (time.time() - t))
        bus.check_sanitizers()


@test
def endpoints_switch_off():
    extra = "health = no\nstats = no\nmetrics = no\nlexbus = no\nsocketio = no\n"
    with ws_bus(extra=extra) as bus:
        for path in ("/health", "/api/ipc/stats", "/metrics", "/", "/socket.io/?EIO=4&transport=polling"):
            check_eq(http(bus.port, "GET", path)[0], 404, path)
        r = RawWS(bus.port, handshake=False)
        check_eq(r.handshake("/lexbus")[0], 404, "/lexbus off")
    with ws_bus(extra="path = /bus\nsocketio_path = /eio/") as bus:
        r = RawWS(bus.port, handshake=False)
        check_eq(r.handshake("/bus")[0], 101, "path moved")
        check_eq(http(bus.port, "GET", "/eio/?EIO=4&transport=polling")[0], 200, "socketio_path moved")
        check_eq(http(bus.port, "GET", "/socket.io/?EIO=4&transport=polling")[0], 404, "old path gone")


@test
def sighup_reloads_origins_and_limits():
    with ws_bus(extra="allowed_origins = https://a.example") as bus:
        def upgrade(origin):
            r = RawWS(bus.port, handshake=False)
            st = r.handshake("/lexbus", headers={"Origin": origin})[0]
            r.close()
            return st
        check_eq((upgrade("https://a.example"), upgrade("https://b.example")), (101, 403), "before")
        text = open(bus.conf).read().replace("https://a.example", "https://b.example")
        bus.write_conf(text)
        bus.send_signal(signal.SIGHUP)
        wait_for(lambda: "settings reloaded" in bus.logtext(), 5, what="the reload")
        check_eq((upgrade("https://a.example"), upgrade("https://b.example")), (403, 101), "after")
        bus.write_conf(text.replace("allowed_origins = https://b.example", "allowed_origins = nonsense"))
        bus.send_signal(signal.SIGHUP)
        wait_for(lambda: "is not *, same-origin or an origin" in bus.logtext(), 5, what="the refused reload")
        check_eq(upgrade("https://b.example"), 101, "a bad reload keeps the old settings")
        # All or nothing: a good websocket section is staged, then dropped
        # because another section is bad.
        log = bus.reload(text.replace("https://b.example", "https://c.example").replace("[plugin unix]\n",
                                                                                         "[plugin unix]\nnonsense = 1\n"))
        check("reload failed, old configuration kept" in log and "unknown key 'nonsense'" in log, log)
        check_eq((upgrade("https://b.example"), upgrade("https://c.example")), (101, 403), "the staged section dropped")
        log = bus.reload(text.replace("https://b.example", "https://c.example"))
        check("configuration reloaded" in log, log)
        check_eq((upgrade("https://b.example"), upgrade("https://c.example")), (403, 101), "then applied")
        check_eq(bus.stats()["plugins"]["websocket"]["reloads"], 2, "two reloads applied")


lbtest.main()
