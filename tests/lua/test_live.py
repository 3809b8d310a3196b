"""routes.lua on live traffic through the real daemon: rules that rewrite,
refuse, fan out and transform events and calls (rewrite hook), rules on
RESPONSEs (response hook, selected by the call's service and method), a
runtime error answered SCRIPT_ERROR naming script and line, bus.emit and
bus.services from rules, and messages no rule selects passing untouched."""
import re

import lbtest
from lbtest import check, check_eq, test, wait_for
from luatest import answer, lua_bus

ROUTES = r"""
return {
  { name = "moved", call = "users.*", to = "user-service" },
  { name = "renamed", call = "user-service.getUserById", rename = "getUser" },
  { name = "no-deletes", call = "user-service.delete*",
    refuse = { code = "FORBIDDEN", message = "deletes are disabled" } },
  { name = "slim", event = "post:created",
    transform = { id = { ["$var"] = "payload.id" }, by = { ["$var"] = "from" },
                  title = { ["$concat"] = { "[", { ["$var"] = "payload.title" }, "]" } } } },
  { name = "tag", event = "post:*", fn = function(m)
      if type(m.payload) ~= "table" then return nil end
      m.payload.tagged = true
      return m
    end },
  { name = "copy", event = "order:>", also = { "audit-service" } },
  { name = "reroute", event = "legacy:*", fn = function(m) return { to = "new-service", event = "modern:" .. m.event:sub(8) } end },
  { name = "limit", call = "calc.add", fn = function(m)
      if m.params.a > 100 then return bus.refuse("RATE_LIMITED", "a is too big") end
      return { params = { a = m.params.a * 2, b = m.params.b } }
    end },
  { name = "boom", event = "boom:*", fn = function(m)
      local x = nil
      return x.field
    end },
  { name = "hide-hash", response = "user-service.getUser", fn = function(m)
      if type(m.data) == "table" then m.data.passwordHash = nil; m.data.via = m.service .. "." .. m.method; return m end
    end },
  { name = "fail-calc", response = "calc.fail", fn = function(m) return { error = { code = "EXECUTION_FAILED", message = "rewritten" } } end },
  { name = "announce", event = "signup:*", fn = function(m)
      assert(bus.emit("welcome:" .. m.event:sub(8), { user = m.payload.user, services = #bus.services() }))
      assert(bus.emit("welcome:direct", { n = 1 }, "greeter"))
      return nil
    end },
  { name = "echo-loop", event = "loop:*", fn = function(m) bus.emit("loop:again", m.payload) end },
  { name = "spin", event = "spin:*", fn = function(m) while true do end end },
  { name = "bomb", call = "calc.bomb", fn = function(m) local t = {} for i = 1, 1e9 do t[i] = string.rep("x", 1000) .. i end end },
  { name = "reorder", event = "reorder:x", fn = function(m)
      local p = m.payload
      p.b = nil; p.zz = 1; p.aa = 2; p[string.rep("x", 45)] = true
      -- The long name removed, collected (the garbage below makes the
      -- collector run) and set again: in the table a new string object,
      -- which Lua does not intern, under the name the order remembers.
      p[string.rep("k", 50)] = nil
      for i = 1, 20000 do local _ = { i } end
      p[string.rep("k", 50)] = "changed"
      return m
    end },
  -- A lone surrogate is a Lua string and encodes as "\ud800", which no frame may carry.
  { name = "surrogate", event = "bad:*", fn = function(m) return { payload = { s = "\u{D800}" } } end },
  { name = "surrogate-call", call = "calc.bad", fn = function(m) return { params = { "\u{D800}" } } end },
}
"""


@test
def calls_rewritten_refused_and_transformed():
    with lua_bus({"routes.lua": ROUTES}) as bus:
        users = bus.client("user-service", methods=["getUser", "getUserById", "deleteUser"])
        calc = bus.client("calc", methods=["add", "fail"])
        c = bus.client("caller")
        c.send({"type": "CALL", "id": "c1", "to": "users", "method": "getUserById", "params": {"id": 1}})
        call = answer(users, data={"name": "ada", "passwordHash": "x"})
        # "moved" rewrote the target; rules are selected on the message as it
        # arrived, so "renamed" (user-service.getUserById) did not run.
        check_eq((call["to"], call["method"], call["params"]), ("user-service", "getUserById", {"id": 1}), "target rewritten")
        r = c.recv_type("RESPONSE")
        check_eq((r["id"], r["status"], r["data"]), ("c1", "success", {"name": "ada", "passwordHash": "x"}),
                 "response rules match the call's own service and method")
        c.send({"type": "CALL", "id": "c2", "to": "user-service", "method": "getUserById", "params": {"id": 2}})
        call = answer(users, data={"name": "bob", "passwordHash": "y"})
        check_eq(call["method"], "getUser", "method renamed")
        r = c.recv_type("RESPONSE")
        check_eq(r["data"], {"name": "bob", "via": "user-service.getUser"}, "result transformed by the response rule")
        r = c.call("user-service", "deleteUser", {"id": 3})
        check_eq((r["type"], r["status"], r["error"]["code"], r["error"]["message"]),
                 ("RESPONSE", "error", "FORBIDDEN", "deletes are disabled"), "refused with code and message")
        users.expect_nothing(0.2)
        c.send({"type": "CALL", "id": "c4", "to": "calc", "method": "add", "params": {"a": 5, "b": 1}})
        call = answer(calc)
        check_eq(call["params"], {"a": 10, "b": 1}, "params transformed in Lua")
        check_eq(c.recv_type("RESPONSE")["data"], {"a": 10, "b": 1}, "answered")
        r = c.call("calc", "add", {"a": 500, "b": 1})
        check_eq((r["error"]["code"], r["error"]["message"]), ("RATE_LIMITED", "a is too big"), "bus.refuse from Lua")
        c.send({"type": "CALL", "id": "c6", "to": "calc", "method": "fail", "params": {}})
        answer(calc, data={"ok": True})
        r = c.recv_type("RESPONSE")
        check_eq((r["status"], r["error"], "data" in r), ("error", {"code": "EXECUTION_FAILED", "message": "rewritten"}, False),
                 "a response rule turns a success into an error")
        rules = {x["name"]: x for x in c.call("lexbus", "rules")["data"]["rules"]}
        check_eq((rules["moved"]["matches"], rules["no-deletes"]["refusals"], rules["limit"]["refusals"], rules["limit"]["matches"]),
                 (1, 1, 1, 2), "per-rule counters count live traffic")
        check(rules["hide-hash"]["changes"] == 1 and rules["hide-hash"]["timeUs"] >= 0, "and changes and time: %r" % rules["hide-hash"])


@test
def events_transformed_fanned_out_and_rerouted():
    with lua_bus({"routes.lua": ROUTES}) as bus:
        sub = bus.client("reader", subscribe=["post:*", "order:>", "reorder:*"])
        audit = bus.client("audit-service")
        modern = bus.client("new-service")
        w = bus.client("writer")
        w.send({"type": "EMIT", "event": "post:created", "payload": {"id": 7, "title": "hi", "body": "x" * 100}})
        ev = sub.recv_type("EVENT")
        check_eq((ev["event"], ev["from"], ev["payload"]), ("post:created", "writer", {"id": 7, "by": "writer", "title": "[hi]", "tagged": True}),
                 "JSONLex transform, then the Lua rule, in file order")
        w.send({"type": "EMIT", "event": "post:edited", "payload": {"id": 1, "text": "a"}})
        check_eq(sub.recv_type("EVENT")["payload"], {"id": 1, "text": "a", "tagged": True}, "Lua payload edit")
        w.send({"type": "EMIT", "event": "order:paid:eu", "payload": {"n": 1}})
        check_eq(sub.recv_type("EVENT")["payload"], {"n": 1}, "subscribers still get it")
        ev = audit.recv_type("EVENT")
        check_eq((ev["event"], ev["payload"]), ("order:paid:eu", {"n": 1}), "fan-out to an extra service")
        w.send({"type": "EMIT", "event": "legacy:ping", "payload": 1})
        ev = modern.recv_type("EVENT")
        check_eq((ev["event"], ev["payload"]), ("modern:ping", 1), "target and event rewritten")
        sub.expect_nothing(0.2)
        # An edited object keeps its members' order; members the rule added
        # follow, sorted (a long name, which Lua does not intern, included).
        k, x = "k" * 50, "x" * 45
        w.send(b'{"type":"EMIT","event":"reorder:x","payload":{"c":1,"b":2,"%s":0,"a":3}}' % k.encode())
        sub.recv_type("EVENT")
        want = b'"payload":{"c":1,"%s":"changed","a":3,"aa":2,"%s":true,"zz":1}' % (k.encode(), x.encode())
        check(want in sub.last_body, "order kept, additions sorted: %r" % sub.last_body)
        # Fan-out alone changes nothing in the frame: it goes out as written.
        w.send(b'{"type":"EMIT","event":"order:x","payload":{"b":1.50,"a":[ ]}}')
        for r in (sub, audit):
            r.recv_type("EVENT")
            check(b'{"b":1.50,"a":[ ]}' in r.last_body, "the payload text kept: %r" % r.last_body)


@test
def runtime_errors_are_script_errors_naming_script_and_line():
    line = ROUTES.split("\n").index("      return x.field") + 1
    with lua_bus({"routes.lua": ROUTES}) as bus:
        w = bus.client("writer")
        for i in range(30):
            w.send({"type": "EMIT", "event": "boom:x", "id": "e%d" % i, "payload": {}})
        for i in range(30):
            e = w.recv_type("ERROR")
            check_eq(e["error"]["code"], "SCRIPT_ERROR", "an EMIT's refusal is an ERROR")
            check(e["error"]["message"].startswith("rule 'boom': routes.lua:%d: attempt to index a nil value" % line),
                  "names rule, script and line: %r" % e["error"]["message"])
        log = bus.logtext()
        logged = len(re.findall(r"warn +\[lua\] rule 'boom': routes.lua:%d:" % line, log))
        check(1 <= logged <= 2, "logged at most once a second (%d lines):\n%s" % (logged, log[-1500:]))
        st = bus.stats()["plugins"]["lua"]
        check_eq(st["rule_errors"], 30, "counted (lb_counter_register)")
        check_eq([r["errors"] for r in st["rules"] if r["name"] == "boom"], [30], "per rule in lexbus stats")


@test
def runaway_rules_on_live_traffic_end_that_message_only():
    with lua_bus({"routes.lua": ROUTES}, extra="max_memory = 16M\n") as bus:
        sub = bus.client("reader", subscribe=["post:*"])
        calc = bus.client("calc", methods=["add", "bomb"])
        w = bus.client("writer")
        w.send({"type": "EMIT", "event": "spin:x", "id": "s1", "payload": {}})
        e = w.recv_type("ERROR", timeout=20)
        check_eq(e["error"]["code"], "SCRIPT_ERROR", "a runaway loop is stopped")
        check("instruction budget exceeded" in e["error"]["message"] and "routes.lua:" in e["error"]["message"],
              "naming the budget, script and line: %r" % e["error"])
        r = w.call("calc", "bomb", {}, timeout=20)
        check_eq((r["status"], r["error"]["code"]), ("error", "SCRIPT_ERROR"), "a memory bomb too, as the CALL's RESPONSE")
        check("memory cap" in r["error"]["message"], "naming the cap: %r" % r["error"])
        calc.expect_nothing(0.2)
        w.send({"type": "EMIT", "event": "post:edited", "payload": {"id": 2}})
        check_eq(sub.recv_type("EVENT")["payload"], {"id": 2, "tagged": True}, "the next messages are served, rules and all")


@test
def a_change_the_bus_refuses_is_a_script_error_and_nothing_goes_out():
    with lua_bus({"routes.lua": ROUTES}) as bus:
        sub = bus.client("reader", subscribe=["bad:*", "post:*"])
        calc = bus.client("calc", methods=["add", "bad"])
        w = bus.client("writer")
        w.send({"type": "EMIT", "event": "bad:x", "id": "b1", "payload": {"ok": 1}})
        e = w.recv_type("ERROR")
        check_eq((e["id"], e["error"]["code"]), ("b1", "SCRIPT_ERROR"), "an EMIT whose rule wrote a value the bus refuses")
        check("rule 'surrogate'" in e["error"]["message"] and "refused its change" in e["error"]["message"],
              "naming the rule: %r" % e["error"])
        r = w.call("calc", "bad", {"a": 1})
        check_eq((r["status"], r["error"]["code"]), ("error", "SCRIPT_ERROR"), "a CALL's: the caller's RESPONSE")
        sub.expect_nothing(0.2)
        calc.expect_nothing(0.2)
        w.send({"type": "EMIT", "event": "post:edited", "payload": {"id": 3}})
        check_eq(sub.recv_type("EVENT")["payload"], {"id": 3, "tagged": True}, "and the next message is served")


@test
def scripts_emit_through_the_plugins_connection():
    with lua_bus({"routes.lua": ROUTES}) as bus:
        sub = bus.client("welcomes", subscribe=["welcome:*", "loop:*"])
        greeter = bus.client("greeter")
        w = bus.client("writer")
        w.send({"type": "EMIT", "event": "signup:web", "payload": {"user": "ada"}})
        ev = sub.recv_type("EVENT")
        check_eq((ev["event"], ev["from"], ev["payload"]["user"]), ("welcome:web", "lua", "ada"),
                 "bus.emit: from the plugin's own service, routed like any event")
        check(ev["payload"]["services"] >= 4, "bus.services lists the bus's services: %r" % ev)
        ev = greeter.recv_type("EVENT")
        check_eq((ev["event"], ev["payload"]), ("welcome:direct", {"n": 1}), "bus.emit to one service")
        # A rule's own events are not run through the rules again.
        w.send({"type": "EMIT", "event": "loop:x", "payload": 1})
        check_eq(sub.recv_type("EVENT")["event"], "loop:x", "the original")
        check_eq(sub.recv_type("EVENT")["event"], "loop:again", "the rule's event, once")
        sub.expect_nothing(0.3)
        services = {s["name"]: s for s in w.call("lexbus", "services")["data"]}
        check("lua" in services, "the plugin's connection is a service: %r" % list(services))
        r = w.call("lua", "anything")
        check_eq(r["error"]["code"], "METHOD_NOT_FOUND", "it serves no methods")
        d = w.call("lexbus", "rules.test", {"type": "EMIT", "event": "signup:x", "payload": {"user": "x"}})["data"]
        check_eq(d.get("emits"), 2, "a dry run holds its events back and counts them")
        sub.expect_nothing(0.3)


@test
def unmatched_traffic_is_untouched():
    with lua_bus({"routes.lua": ROUTES}) as bus:
        sub = bus.client("reader", subscribe=["misc:*"])
        svc = bus.client("plain", methods=["m"])
        w = bus.client("writer")
        before = bus.stats()["plugins"]["lua"]
        raw = b'{"type":"EMIT","event":"misc:x","payload":{"b":1.50,"a":[ ],"big":123456789012345678901234567890}}'
        w.send(raw)
        sub.recv_type("EVENT")
        check(b'{"b":1.50,"a":[ ],"big":123456789012345678901234567890}' in sub.last_body, "payload as written: %r" % sub.last_body)
        w.send(b'{"type":"CALL","id":"p1","to":"plain","method":"m","params":{"x":1.0e0}}')
        svc.recv_type("CALL")
        check(b'"params":{"x":1.0e0}' in svc.last_body, "params as written: %r" % svc.last_body)
        after = bus.stats()["plugins"]["lua"]
        check_eq((after["lua"]["entries"], after["rule_matches"]), (before["lua"]["entries"], 0),
                 "no rule ran and Lua was never entered: %r" % after)


lbtest.main()
