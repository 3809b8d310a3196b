"""Reloading the scripts while the bus runs: SIGHUP and lexbus.reload
recompile everything into a fresh state; a broken script leaves the old
one serving and is reported in Lua's own form; no message or connection is
lost while reloading under load."""
import os
import signal
import threading
import time

import lbtest
from lbtest import check, check_eq, test, wait_for
from luatest import lua_bus, write_script

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


def version(c):
    r = c.call("lexbus", "rules.test", {"type": "EMIT", "event": "v:x"})
    return r["data"].get("payload")


def reloaded(bus, n):
    return lambda: bus.logtext().count("[lua] reloaded") >= n


@test
def sighup_swaps_in_new_scripts_and_a_broken_one_changes_nothing():
    with lua_bus({"routes.lua": V1, "helper.lua": "return { n = 1 }"}) as bus:
        c = bus.client("watcher")
        check_eq(version(c), {"v": 1, "helper": 1}, "first version")
        write_script(bus.lua_dir, "routes.lua", V2)
        write_script(bus.lua_dir, "helper.lua", "return { n = 2 }")
        bus.send_signal(signal.SIGHUP)
        wait_for(reloaded(bus, 1), what="the reload")
        check_eq(version(c), {"v": 2, "helper": 2}, "new rules and modules after SIGHUP")
        rules = c.call("lexbus", "rules")["data"]
        check_eq([r["name"] for r in rules["rules"]], ["version", "added"], "rule list")
        check(all(s["loadedAt"] >= rules["loadedAt"] - 1000 for s in rules["scripts"] if s["loaded"]), "load times")
        write_script(bus.lua_dir, "routes.lua", BROKEN)
        bus.send_signal(signal.SIGHUP)
        wait_for(lambda: "routes.lua:3: unexpected symbol near '@'" in bus.logtext(), what="the error in the log")
        log = bus.logtext()
        check("[plugin lua] reload failed, old settings kept: routes.lua:3: unexpected symbol near '@'" in log,
              "Lua's own form in the log:\n" + log[-1500:])
        check_eq(version(c), {"v": 2, "helper": 2}, "the previous version keeps serving")
        rel = c.call("lexbus", "rules")["data"]["reload"]
        check_eq((rel["reloads"], rel["failures"]), (2, 1), "counted")
        check(rel["lastError"].startswith("routes.lua:3: unexpected symbol near '@'"), "last error kept: %r" % rel)
        # A runtime error while loading (not syntax) is reported the same way.
        write_script(bus.lua_dir, "routes.lua", "local t = nil\nreturn t.rules\n")
        r = c.call("lexbus", "reload")
        check_eq(r["status"], "success", "lexbus.reload answers (plugin ABI v1 reports plugin failures in the log)")
        wait_for(lambda: "routes.lua:2: attempt to index a nil value (local 't')" in bus.logtext(), what="runtime load error")
        check_eq(version(c), {"v": 2, "helper": 2}, "still the previous version")
        write_script(bus.lua_dir, "routes.lua", V1)
        bus.send_signal(signal.SIGHUP)
        wait_for(reloaded(bus, 2), what="the good reload")
        check_eq(version(c), {"v": 1, "helper": 2}, "fixed")
        check(not c.call("lexbus", "rules")["data"]["reload"].get("lastError"), "error cleared")


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


@test
def reload_under_load_loses_nothing():
    with lua_bus({"routes.lua": V1, "helper.lua": "return { n = 1 }"}) as bus:
        stop = threading.Event()
        results = {"sent": 0, "answered": 0, "bad": []}

        def hammer():
            c = bus.client("hammer")
            i = 0
            while not stop.is_set():
                i += 1
                r = c.call("lexbus", "jsonlex", {"expr": {"$concat": ["n", {"$var": "i"}]}, "context": {"i": i}}, timeout=10)
                results["sent"] += 1
                if r.get("status") == "success" and r.get("data") == "n%d" % i:
                    results["answered"] += 1
                else:
                    results["bad"].append(r)
                d = c.call("lexbus", "rules.test", {"type": "EMIT", "event": "v:x"}, timeout=10)
                if d.get("status") != "success" or d["data"]["payload"]["v"] not in (1, 2):
                    results["bad"].append(d)

        t = threading.Thread(target=hammer)
        t.start()
        try:
            for k in range(20):
                write_script(bus.lua_dir, "routes.lua", V2 if k % 2 == 0 else V1)
                bus.send_signal(signal.SIGHUP)
                time.sleep(0.05)
            wait_for(reloaded(bus, 20), timeout=20, what="20 reloads")
        finally:
            stop.set()
            t.join(20)
        check(results["sent"] > 20, "traffic flowed during the reloads: %r" % results["sent"])
        check_eq(results["bad"], [], "every call answered correctly")
        check_eq(results["answered"], results["sent"], "nothing lost")
        check_eq(bus.stats()["connections"]["evicted"], 0, "no connection dropped")


lbtest.main()
