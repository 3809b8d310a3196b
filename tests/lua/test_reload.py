"""Reloading the scripts while the bus runs: SIGHUP and lexbus.reload
recompile everything into a fresh state; a broken script leaves the old
one serving and is reported in Lua's own form; no message or connection is
lost while reloading under load."""
import json
import os
import signal
import threading
import time

import lbtest
from lbtest import check, check_eq, test, wait_for
from lbtest import Bus
from luatest import lua_bus, scripts_dir, write_script

V1 = """local helper = require("helper")
return {
  { name = "version", event = "v:*", fn = function(m) return { payload = { v = 1, helper = helper.n } } end },
}
"""
V2 = """local helper = require("helper")
return {
  { name = "version", event = "v:*", fn = function(m) return { payload = { v = 2, helper = helper.n } } end },
  { name = "added", event = "new:*", to = "x" },
}
"""
BROKEN = """return {
  { name = "version", event = "v:*", to = "y" },
  @
}
"""


def version(w, sub):
    """What the loaded rules do to a live event."""
    w.send({"type": "EMIT", "event": "v:x", "payload": {}})
    return sub.recv_type("EVENT")["payload"]


def reloaded(bus, n):
    return lambda: bus.logtext().count("[lua] reloaded") >= n


@test
def sighup_swaps_in_new_scripts_and_a_broken_one_changes_nothing():
    with lua_bus({"routes.lua": V1, "helper.lua": "return { n = 1 }"}) as bus:
        c = bus.client("watcher")
        sub = bus.client("sub", subscribe=["v:*"])
        check_eq(version(c, sub), {"v": 1, "helper": 1}, "first version")
        write_script(bus.lua_dir, "routes.lua", V2)
        write_script(bus.lua_dir, "helper.lua", "return { n = 2 }")
        bus.send_signal(signal.SIGHUP)
        wait_for(reloaded(bus, 1), what="the reload")
        check_eq(version(c, sub), {"v": 2, "helper": 2}, "new rules and modules after SIGHUP")
        rules = c.call("lexbus", "rules")["data"]
        check_eq([r["name"] for r in rules["rules"]], ["version", "added"], "rule list")
        check(all(s["loadedAt"] >= rules["loadedAt"] - 1000 for s in rules["scripts"] if s["loaded"]), "load times")
        # A syntax error: the log says where, in Lua's form; nothing changes.
        write_script(bus.lua_dir, "routes.lua", BROKEN)
        log = bus.reload()
        check("reload failed, old configuration kept: [plugin lua] reload failed: routes.lua:3: unexpected symbol near '@'" in log,
              "Lua's own form in the log:\n" + log[-1500:])
        check_eq(version(c, sub), {"v": 2, "helper": 2}, "the previous version keeps serving")
        rel = c.call("lexbus", "rules")["data"]["reload"]
        check_eq((rel["reloads"], rel["failures"]), (2, 1), "counted")
        check(rel["lastError"].startswith("routes.lua:3: unexpected symbol near '@'"), "last error kept: %r" % rel)
        # A runtime error while loading: lexbus.reload answers with it.
        write_script(bus.lua_dir, "routes.lua", "local t = nil\nreturn t.rules\n")
        r = c.call("lexbus", "reload")
        check_eq((r["status"], r["error"]["code"]), ("error", "EXECUTION_FAILED"), "lexbus.reload fails")
        check("[plugin lua] reload failed: routes.lua:2: attempt to index a nil value (local 't')" in r["error"]["message"],
              "and names script and line: %r" % r["error"])
        check_eq(version(c, sub), {"v": 2, "helper": 2}, "still the previous version")
        # `lexbus reload` the same, then a good one.
        r = bus.cli("reload")
        check_eq(r.returncode, 1, "lexbus reload exits 1")
        check("routes.lua:2: attempt to index a nil value" in json.loads(r.stderr)["error"]["message"], "and says why: " + r.stderr)
        write_script(bus.lua_dir, "routes.lua", V1)
        r = bus.cli("reload")
        check_eq((r.returncode, json.loads(r.stdout)), (0, {"reloaded": True}), "a good reload: " + r.stderr)
        check_eq(version(c, sub), {"v": 1, "helper": 2}, "fixed")
        check(not c.call("lexbus", "rules")["data"]["reload"].get("lastError"), "error cleared")


@test
def bus_lua_dir_is_the_default_dir():
    d = scripts_dir({"routes.lua": V1, "helper.lua": "return { n = 7 }"})
    with Bus(bus="lua_dir = %s\n" % d, plugins="[plugin lua]\n") as bus:
        c = bus.client("watcher")
        sub = bus.client("sub", subscribe=["v:*"])
        check_eq(version(c, sub), {"v": 1, "helper": 7}, "[bus] lua_dir is where [plugin lua] finds its scripts")
        check_eq(c.call("lexbus", "rules")["data"]["dir"], d, "listed")
    with lua_bus({"routes.lua": "return {}"}, bus="lua_dir = %s\n" % d) as bus:
        c = bus.client("watcher")
        check_eq(c.call("lexbus", "rules")["data"]["dir"], bus.lua_dir, "[plugin lua] dir wins")


@test
def response_rules_come_and_go_with_reloads():
    # The response hook is registered only while response rules are loaded.
    with lua_bus({"routes.lua": "return {}"}) as bus:
        svc = bus.client("svc", methods=["m"])
        c = bus.client("caller")

        def round_trip(i):
            c.send({"type": "CALL", "id": "r%d" % i, "to": "svc", "method": "m", "params": {}})
            call = svc.recv_type("CALL")
            svc.send({"type": "RESPONSE", "id": call["id"], "to": call["from"], "status": "success", "data": {"n": i}})
            return c.recv_type("RESPONSE")["data"]

        check_eq(round_trip(1), {"n": 1}, "no rules")
        write_script(bus.lua_dir, "routes.lua",
                     'return { { response = "svc.m", fn = function(m) m.data.seen = true; return m end } }')
        check_eq(bus.cli("reload").returncode, 0, "reloaded")
        check_eq(round_trip(2), {"n": 2, "seen": True}, "a response rule added by a reload runs")
        write_script(bus.lua_dir, "routes.lua", "return {}")
        check_eq(bus.cli("reload").returncode, 0, "reloaded")
        check_eq(round_trip(3), {"n": 3}, "and is gone after the next")


@test
def store_survives_reloads():
    routes = """return { { event = "count:*", fn = function(m)
  local n = (bus.store.get("n") or 0) + 1
  assert(bus.store.set("n", n))
  return { payload = n }
end } }
"""
    with lua_bus({"routes.lua": routes}) as bus:
        c = bus.client("counter")
        got = [c.call("lexbus", "rules.test", {"type": "EMIT", "event": "count:x"})["data"]["payload"] for _ in range(3)]
        check_eq(got, [1, 2, 3], "counts")
        bus.send_signal(signal.SIGHUP)
        wait_for(reloaded(bus, 1), what="reload")
        check_eq(c.call("lexbus", "rules.test", {"type": "EMIT", "event": "count:x"})["data"]["payload"], 4, "kept")


LOAD_V1 = 'return { { name = "v", event = "seq:*", fn = function(m) return { payload = { v = 1, n = m.payload.n } } end } }'
LOAD_V2 = ('return { { name = "v", event = "seq:*", transform = { v = 2, n = { ["$var"] = "payload.n" } } },\n'
           '         { name = "c", call = "echo.*", fn = function(m) return { params = { n = m.params.n, v = 2 } } end } }')


@test
def reload_under_load_loses_nothing():
    with lua_bus({"routes.lua": LOAD_V1}) as bus:
        stop = threading.Event()
        res = {"events": 0, "calls": 0, "bad": []}

        def events():
            # Events through a rule that every reload replaces: each one arrives
            # once, in order, transformed by one version or the other.
            sub = bus.client("seq-sub", subscribe=["seq:*"])
            pub = bus.client("seq-pub")
            n = 0
            while not stop.is_set():
                for i in range(n, n + 50):
                    pub.send({"type": "EMIT", "event": "seq:x", "payload": {"n": i}})
                for i in range(n, n + 50):
                    p = sub.recv_type("EVENT", timeout=10)["payload"]
                    if p.get("n") != i or p.get("v") not in (1, 2):
                        res["bad"].append(p)
                n += 50
                res["events"] = n

        def calls():
            echo = bus.client("echo", methods=["m"])
            c = bus.client("caller")
            i = 0
            while not stop.is_set():
                i += 1
                c.send({"type": "CALL", "id": "q%d" % i, "to": "echo", "method": "m", "params": {"n": i}})
                call = echo.recv_type("CALL", timeout=10)
                if call["params"].get("n") != i:
                    res["bad"].append(call)
                echo.send({"type": "RESPONSE", "id": call["id"], "to": call["from"], "status": "success", "data": i})
                r = c.recv_type("RESPONSE", timeout=10)
                if r.get("id") != "q%d" % i or r.get("data") != i:
                    res["bad"].append(r)
                j = c.call("lexbus", "jsonlex", {"expr": {"$concat": ["n", {"$var": "i"}]}, "context": {"i": i}}, timeout=10)
                if j.get("data") != "n%d" % i:
                    res["bad"].append(j)
                res["calls"] = i

        threads = [threading.Thread(target=events), threading.Thread(target=calls)]
        for t in threads:
            t.start()
        try:
            ctl = bus.client("ctl")
            for k in range(20):
                write_script(bus.lua_dir, "routes.lua", LOAD_V2 if k % 2 == 0 else LOAD_V1)
                if k % 2:
                    bus.send_signal(signal.SIGHUP)
                    wait_for(reloaded(bus, k + 1), timeout=20, what="reload %d" % k)
                else:
                    check_eq(ctl.call("lexbus", "reload", timeout=20).get("status"), "success", "lexbus.reload %d" % k)
                time.sleep(0.05)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        check(res["events"] >= 100 and res["calls"] >= 10, "traffic flowed during the reloads: %r" % res)
        check_eq(res["bad"][:3], [], "every event and call arrived once, in order, answered")
        st = bus.stats()
        check_eq(st["connections"]["evicted"], 0, "no connection dropped")
        check_eq(st["plugins"]["lua"]["reloads"], 20, "20 reloads")


lbtest.main()
