"""The operators' endpoints on the websocket listener: /health and
/api/ipc/stats field by field, /metrics parsed by a real Prometheus text
parser (Debian's python3-prometheus-client), every endpoint switchable
off, SIGHUP reloading the listener's settings."""
import json
import signal
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


@test
def health_and_stats_field_by_field():
    with ws_bus() as bus, Sio() as sio:
        st, h = get_json(bus.port, "/health")
        check_eq(st, 200, "health status")
        check_eq((h["status"], h["node"], h["connections"], h["services"]), ("ok", "test-node", 0, 0), "idle: %r" % h)
        check(isinstance(h["uptime"], int) and h["uptime"] >= 0, "uptime: %r" % h)
        c = ws_register(bus, "browser-a")
        sio.connect("s", "http://127.0.0.1:%d/ipc/sock-b" % bus.port, transports=["websocket"])
        st, h = get_json(bus.port, "/health")
        check_eq((h["connections"], h["services"]), (2, 2), "one /lexbus and one Socket.IO connection: %r" % h)
        st, s = get_json(bus.port, "/api/ipc/stats")
        check_eq(st, 200, "stats status")
        check_eq((s["activeServices"], sorted(s["services"]), s["activeConnections"]),
                 (2, ["browser-a", "sock-b"], 2), "the Exprsn fields: %r" % s)
        by = {x["service"]: x for x in s["connections"]}
        check_eq((by["browser-a"]["transport"], by["sock-b"]["transport"], by["sock-b"]["namespace"]),
                 ("websocket", "socket.io", "/ipc/sock-b"), "connections: %r" % s["connections"])
        check(by["browser-a"]["address"].startswith("127.0.0.1:") and isinstance(by["browser-a"]["id"], int), by)
        check_eq(s["rateLimits"], {}, "no rate limits reported yet")
        lx = s["lexbus"]
        check_eq((lx["node"], lx["webSocketConnections"], lx["socketIoNamespaces"], lx["sessions"]),
                 ("test-node", 1, 1, 1), "lexbus's part: %r" % lx)
        c.close()
        st, _, _ = http(bus.port, "GET", "/health", headers={"Origin": "http://elsewhere.example"})
        check_eq(st, 200, "health answers any origin (development)")


@test
def metrics_parse_as_prometheus_text():
    with ws_bus() as bus:
        c = ws_register(bus, "metric-src")
        http(bus.port, "GET", "/nope")
        st, h, body = http(bus.port, "GET", "/metrics")
        check_eq(st, 200, "metrics status")
        check(h["content-type"].startswith("text/plain; version=0.0.4"), h)
        text = body.decode()
        fams = {f.name: f for f in text_string_to_metric_families(text)}
        for name, typ in (("lexbus_up", "gauge"), ("lexbus_connections", "gauge"), ("lexbus_services", "gauge"),
                          ("lexbus_websocket_accepted", "counter"), ("lexbus_websocket_http_errors", "counter"),
                          ("lexbus_engineio_sessions", "counter"), ("lexbus_socketio_joins", "counter")):
            check(name in fams, "family %s in %s" % (name, sorted(fams)))
            check_eq(fams[name].type, typ, name)
            check(fams[name].documentation, "HELP for " + name)
        conns = {s.labels["transport"]: s.value for s in fams["lexbus_connections"].samples}
        check_eq(conns, {"websocket": 1.0, "socket.io": 0.0}, "connections by transport")
        errs = [s.value for s in fams["lexbus_websocket_http_errors"].samples if s.name.endswith("_total")]
        check_eq(errs, [1.0], "the 404 counted")
        check(text.count("# TYPE lexbus_connections ") == 1, "one TYPE line per family")
        c.close()


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


lbtest.main()
