"""[plugin example] through the real daemon: the in-process service and its
lb_call, the rewrite hook, lb_emit, the stats reader, counters, reloads in
two steps, and the heartbeat exemption of in-process connections."""
import json
import subprocess
import time

import lbtest
from lbtest import LEXBUSD, Bus, check, check_eq, test

EXAMPLE = "[plugin example]\n"


def example_bus(keys="", bus="", **kw):
    b = Bus(plugins=EXAMPLE + keys, bus=bus, **kw)
    wait_echo(b)
    return b


def wait_echo(bus):
    """The plugin's REGISTER is routed on the loop's first turns: wait for it."""
    probe = bus.client("echo-probe-%d" % time.time_ns())

    def registered():
        r = probe.call("lexbus", "services", {"name": "echo"})
        return r["status"] == "success" and r["data"]
    lbtest.wait_for(registered, what="the example plugin's service")
    probe.close()


def ok(r):
    check(r.get("status") == "success", "call failed: %r" % (r,))
    return r.get("data")


def error_of(r):
    check(r.get("status") == "error", "expected an error, got %r" % (r,))
    return r["error"]["code"], r["error"]["message"]


def plugin_stats(bus):
    return bus.stats()["plugins"]["example"]


@test
def echo_upper_tick_and_unknown_methods():
    with example_bus() as bus:
        c = bus.client("user")
        r = c.call("echo", "echo", {"a": [1, 2, {"b": "ü"}]})
        check_eq((ok(r), r["from"], r["to"]), ({"a": [1, 2, {"b": "ü"}]}, "echo", "user"), "echo")
        check_eq(ok(c.call("echo", "upper", {"text": "Hello, bus"})), {"text": "HELLO, BUS"}, "upper")
        code, msg = error_of(c.call("echo", "upper", {"txt": 1}))
        check(code == "INVALID_MESSAGE" and "text" in msg, "upper without text: %s %s" % (code, msg))
        check_eq(ok(c.call("echo", "tick")), {"n": 1}, "tick counts")
        check_eq(ok(c.call("echo", "tick")), {"n": 2}, "tick counts on")
        r = c.call("echo", "nope")
        check_eq((error_of(r)[0], r["from"]), ("METHOD_NOT_FOUND", "lexbus"), "an unknown method: the bus answers")


@test
def ask_calls_a_socket_service_and_back():
    with example_bus() as bus:
        backend = bus.client("backend", methods=["double", "fail"])
        c = bus.client("user")
        c.send({"type": "CALL", "id": "a1", "to": "echo", "method": "ask",
                "params": {"to": "backend", "method": "double", "params": {"x": 21}}})
        m = backend.recv()
        check_eq((m["type"], m["from"], m["method"], m["params"]), ("CALL", "echo", "double", {"x": 21}),
                 "the plugin's lb_call reaches the socket service")
        backend.send({"type": "RESPONSE", "id": m["id"], "status": "success", "data": {"x": 42}})
        r = c.recv()
        check_eq((r["id"], r["from"], ok(r)), ("a1", "echo", {"x": 42}), "its answer comes back through echo.ask")
        c.send({"type": "CALL", "id": "a2", "to": "echo", "method": "ask",
                "params": {"to": "backend", "method": "fail"}})
        m = backend.recv()
        backend.send({"type": "RESPONSE", "id": m["id"], "status": "error",
                      "error": {"code": "EXECUTION_FAILED", "message": "backend says no"}})
        r = c.recv()
        check_eq((r["id"], error_of(r)), ("a2", ("EXECUTION_FAILED", "backend says no")), "an error answer too")
        st = plugin_stats(bus)
        check_eq((st["asks"], st["ask_errors"], st["asks_waiting"]), (2, 1, 0), "ask counters")


@test
def ask_errors_from_the_bus_propagate():
    with example_bus(call_timeout="1s") as bus:
        c = bus.client("user")
        code, msg = error_of(c.call("echo", "ask", {"to": "missing", "method": "m"}))
        check(code == "SERVICE_NOT_FOUND" and "missing" in msg, "missing service: %s %s" % (code, msg))
        code, _ = error_of(c.call("echo", "ask", {"to": "echo", "method": "nope"}))
        check_eq(code, "METHOD_NOT_FOUND", "missing method")
        check_eq(ok(c.call("echo", "ask", {"to": "echo", "method": "upper", "params": {"text": "x"}})),
                 {"text": "X"}, "ask may call its own service (no re-entry: a later loop turn)")
        bus.client("sleepy", methods=["m"])
        code, _ = error_of(c.call("echo", "ask", {"to": "sleepy", "method": "m"}))
        check_eq(code, "TIMEOUT", "a silent callee: the bus's TIMEOUT reaches the callback")
        code, _ = error_of(c.call("echo", "ask", {"method": "m"}))
        check_eq(code, "INVALID_MESSAGE", "ask without a target")
        check_eq(plugin_stats(bus)["asks_waiting"], 0, "nothing left waiting")


@test
def rewrite_hook_aliases_and_tags():
    keys = "alias.old-echo = echo\nalias.gone = backend\ntag_events = orders:>\ntag_events = audit:*\ntag = eu-1\n"
    with example_bus(keys) as bus:
        sub = bus.client("sub", subscribe=["orders:>", "other", "audit:>"])
        backend = bus.client("backend", methods=["m"])
        pub = bus.client("pub")
        r = pub.call("old-echo", "echo", {"v": 1})
        check_eq((ok(r), r["from"]), ({"v": 1}, "echo"), "a CALL to an alias reaches its service")
        pub.send({"type": "EMIT", "event": "note", "to": "gone", "payload": 7})
        m = backend.recv()
        check_eq((m["type"], m["to"], m["payload"]), ("EVENT", "backend", 7), "an EMIT to an alias too")
        pub.send({"type": "EMIT", "event": "orders:new", "payload": {"id": 1}})
        m = sub.recv()
        check_eq((m["event"], m["payload"]), ("orders:new", {"id": 1, "tag": "eu-1"}), "a matching event is tagged")
        pub.send({"type": "EMIT", "event": "other", "payload": {"id": 2}})
        check_eq(sub.recv()["payload"], {"id": 2}, "others are not")
        pub.send({"type": "EMIT", "event": "orders:new:eu", "payload": [1]})
        check_eq(sub.recv()["payload"], [1], "a payload that is no object is left alone")
        pub.send({"type": "EMIT", "event": "audit:x", "payload": {"tag": "old"}})
        check_eq(sub.recv()["payload"], {"tag": "eu-1"}, "the second tag_events pattern; the member replaced")
        pub.send({"type": "EMIT", "event": "audit:x:y", "payload": {}})
        check_eq(sub.recv()["payload"], {}, "audit:* is one segment only")
        st = plugin_stats(bus)
        check_eq((st["aliased"], st["events_tagged"]), (2, 2), "rewrite counters")


@test
def emitted_events_reach_socket_subscribers():
    with example_bus() as bus:
        sub = bus.client("sub", subscribe=["example:*"])
        c = bus.client("user")
        check_eq(ok(c.call("echo", "tick")), {"n": 1}, "tick")
        m = sub.recv()
        check_eq((m["type"], m["event"], m["from"], m.get("to"), m["payload"]),
                 ("EVENT", "example:tick", "echo", None, {"n": 1}), "the plugin's lb_emit (a broadcast: no `to`)")


@test
def raw_methods_keep_the_json_as_written():
    """A method registered with lb_system_method_register_raw sees and
    writes JSON text; a jansson method refuses params it cannot hold."""
    with example_bus() as bus:
        c = bus.client("user")
        text = '{"big":123456789012345678901234567890,"f":0.1,"z":1e400,"s":"\\u00e9"}'
        c.send_raw(lbtest.frame(('{"type":"CALL","id":"r1","to":"lexbus","method":"example.echo","params":%s}'
                                 % text).encode()))
        c._fill(4, 5)
        n = int.from_bytes(c.buf[:4], "big")
        c._fill(4 + n, 5)
        raw, c.buf = c.buf[4:4 + n].decode(), c.buf[4 + n:]
        check('"data":' + text in raw, "the params came back as written: %s" % raw)
        r = c.call("lexbus", "example.health", {"x": 1})
        check_eq(r["status"], "success", "health")
        c.send_raw(lbtest.frame(b'{"type":"CALL","id":"r2","to":"lexbus","method":"example.health","params":{"x":1e400}}'))
        r = c.recv_type("RESPONSE")
        check(r["id"] == "r2" and r["error"]["code"] == "INVALID_MESSAGE" and "params" in r["error"]["message"],
              "params jansson cannot hold are refused, not replaced by {}: %r" % r)


@test
def tick_timer_and_a_quick_drain():
    with example_bus("tick_interval = 100ms\n") as bus:
        sub = bus.client("sub", subscribe=["example:tick"])
        ns = [sub.recv(3)["payload"]["n"] for _ in range(3)]
        check(ns == sorted(ns) and len(set(ns)) == 3, "ticks from the timer: %r" % ns)
        t0 = time.time()
        check_eq(bus.stop(), 0, "exit status")
        took = time.time() - t0
        # The timer stops when the bus closes the plugin's connection; one
        # left pending would hold the drain until it gives up (2 s).
        check(took < 1.5, "drain took %.2fs" % took)


@test
def health_field_by_field():
    with example_bus() as bus:
        t0 = time.time()
        c = bus.client("user", methods=["m"])
        for _ in range(3):
            ok(c.call("echo", "echo"))
        h = ok(c.call("lexbus", "example.health"))
        st = c.call("lexbus", "stats")["data"]
        check_eq(sorted(h), ["connections", "services", "status", "uptime"], "fields")
        check_eq(h["status"], "ok", "status")
        check(isinstance(h["uptime"], int) and abs(h["uptime"] - st["uptime"]) <= 1,
              "uptime %r vs stats %r" % (h["uptime"], st["uptime"]))
        check(h["uptime"] <= time.time() - t0 + 30, "uptime is seconds")
        # The socket client `user` and the plugin's own connection.
        check_eq(h["connections"], 2, "connections")
        check_eq(h["connections"], st["connections"]["open"], "connections as lexbus stats counts them")
        check_eq(h["services"], {"echo": {"instances": 1, "calls": 3}, "user": {"instances": 1, "calls": 0}},
                 "services")
        c2 = bus.client("user", methods=["m"])
        h = ok(c2.call("lexbus", "example.health"))
        check_eq((h["connections"], h["services"]["user"]["instances"]), (3, 2), "a second instance")


@test
def counters_in_lexbus_stats():
    with example_bus("alias.e = echo\n") as bus:
        c = bus.client("user")
        ok(c.call("echo", "echo"))
        ok(c.call("e", "upper", {"text": "a"}))
        ok(c.call("echo", "tick"))
        error_of(c.call("echo", "ask", {"to": "nobody", "method": "m"}))
        p = bus.cli("stats")
        check_eq(p.returncode, 0, "lexbus stats: " + p.stderr)
        st = json.loads(p.stdout)["plugins"]["example"]
        want = {"calls": 4, "asks": 1, "ask_errors": 1, "ticks": 1, "events_tagged": 0, "aliased": 1,
                "asks_waiting": 0}
        check_eq(st, want, "plugins.example in `lexbus stats`")


def reload_call(c):
    return c.call("lexbus", "reload")


@test
def reload_good_and_bad():
    base = "tag_events = orders:*\ntag = one\n[plugin ratelimit]\nmax = 100\n"
    with example_bus(base) as bus:
        conf = open(bus.conf).read()
        sub = bus.client("sub", subscribe=["orders:*"])
        pub = bus.client("pub")

        def tag_now():
            pub.send({"type": "EMIT", "event": "orders:x", "payload": {}})
            return sub.recv()["payload"].get("tag")
        check_eq(tag_now(), "one", "before")
        bus.write_conf(conf.replace("tag = one", "tag = two\nalias.e = echo"))
        check_eq(ok(reload_call(pub)), {"reloaded": True}, "a good reload")
        check_eq(tag_now(), "two", "new tag applied")
        check_eq(ok(pub.call("e", "echo", 5)), 5, "new alias applied")
        good = open(bus.conf).read()
        for bad, what in (("tag_events = orders::x", "tag_events = orders::x"),
                          ("alias.x = not a name", "alias.x"),
                          ("colour = red", "unknown key 'colour'"),
                          ("tick_interval = 5ms", "tick_interval")):
            text = good.replace("tag = two", "tag = three\n" + bad)
            bus.write_conf(text)
            line = text.splitlines().index(bad) + 1
            code, msg = error_of(reload_call(pub))
            check_eq(code, "EXECUTION_FAILED", "bad reload (%s)" % bad)
            check("[plugin example]" in msg and what in msg, "names the plugin and the key: %s" % msg)
            check("bus.conf:%d" % line in msg, "names file:line %d: %s" % (line, msg))
            check_eq(tag_now(), "two", "old settings kept after: %s" % bad)
        # All or nothing: the example's good new section is staged, then
        # dropped (reload_done(false)) because a later plugin's is bad.
        bus.write_conf(good.replace("tag = two", "tag = three").replace("max = 100", "max = 0"))
        code, msg = error_of(reload_call(pub))
        check("[plugin ratelimit]" in msg and "max" in msg, msg)
        check_eq(tag_now(), "two", "the example's staged settings were dropped")
        bus.write_conf(good.replace("tag = two", "tag = three").replace("[bus]\n", "[bus]\nmax_depth = 0\n"))
        code, msg = error_of(reload_call(pub))
        check("max_depth" in msg, msg)
        check_eq(tag_now(), "two", "...and when [bus] is bad")
        bus.write_conf(good.replace("tag = two", "tag = three"))
        check_eq(ok(reload_call(pub)), {"reloaded": True}, "a good reload again")
        check_eq(tag_now(), "three", "applied")


@test
def local_connection_is_exempt_from_heartbeats():
    with example_bus(heartbeat="200ms") as bus:
        silent = bus.client("silent")
        time.sleep(1.2)   # 6 intervals; eviction comes after 3
        got = silent.expect_closed(timeout=3)
        check(any(m.get("error", {}).get("code") == "TIMEOUT" for m in got), "a silent socket client is evicted: %r" % got)
        c = bus.client("user")
        check_eq(ok(c.call("echo", "echo", "still here")), "still here", "the plugin's service is still registered")
        check_eq(c.call("lexbus", "stats")["data"]["connections"]["evicted"], 1, "only the socket client was evicted")


@test
def slow_consumer_close_answers_the_plugins_calls():
    """The bus closes the plugin's connection (slow consumer) while its
    lb_call is in flight: the callback still gets its one RESPONSE."""
    with example_bus(bus="outbuf_high = 4K\noutbuf_max = 4K\n") as bus:
        bus.client("backend", methods=["m"])        # never answers
        a = bus.client("asker")
        a.send({"type": "CALL", "id": "k1", "to": "echo", "method": "ask", "params": {"to": "backend", "method": "m"}})
        lbtest.wait_for(lambda: plugin_stats(bus)["asks_waiting"] == 1, what="the ask to be in flight")
        big = bus.client("big")
        r = big.call("echo", "echo", {"blob": "x" * 8192})
        check_eq(error_of(r)[0], "SERVICE_UNAVAILABLE", "the 8K CALL: its callee was closed as a slow consumer")
        r = a.recv()
        check_eq((r["id"], error_of(r)[0]), ("k1", "SERVICE_UNAVAILABLE"), "the ask's caller is answered")
        lbtest.wait_for(lambda: plugin_stats(bus)["asks_waiting"] == 0, what="the plugin's callback")
        check("in-process connection closed" in bus.logtext(), "on_close ran")


@test
def a_failed_start_after_the_plugin_loaded_is_clean():
    """Start-up fails in a later section: the plugin is unloaded after the
    host closed its in-process connection (its handle must stay valid)."""
    bus = Bus(start=False, plugins=EXAMPLE + "[plugin ratelimit]\nmax = 0\n")
    try:
        p = subprocess.run([LEXBUSD, "-c", bus.conf], capture_output=True, text=True, timeout=30)
        check(p.returncode == 1 and "[plugin ratelimit]" in p.stderr, p.stderr)
        for marker in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
            check(marker not in p.stderr, "sanitizer report:\n" + p.stderr[-4000:])
    finally:
        bus.__exit__(None, None, None)


@test
def check_mode_and_bad_settings():
    for keys, want in (("service = no way\n", "service = no way"), ("tag_events = a::b\n", "tag_events"),
                       ("alias.x = y z\n", "alias.x"), ("tick_interval = 1ms\n", "tick_interval")):
        bus = Bus(start=False, plugins=EXAMPLE + keys)
        p = subprocess.run([LEXBUSD, "-t", "-c", bus.conf], capture_output=True, text=True, timeout=30)
        check(p.returncode == 1 and "[plugin example]" in p.stderr and want in p.stderr, p.stderr)
        bus.__exit__(None, None, None)
    bus = Bus(start=False, plugins=EXAMPLE + "alias.a = b\ntick_interval = 1s\n")
    p = subprocess.run([LEXBUSD, "-t", "-c", bus.conf], capture_output=True, text=True, timeout=30)
    check(p.returncode == 0 and "configuration OK" in p.stdout, p.stdout + p.stderr)
    check("AddressSanitizer" not in p.stderr and "LeakSanitizer" not in p.stderr, p.stderr)
    bus.__exit__(None, None, None)


lbtest.main()
