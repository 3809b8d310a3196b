"""routes.lua rules through the real daemon: selection in C (event
patterns, SERVICE.METHOD patterns, senders), fixed actions and Lua
functions, rule order, garbage returned by rules, JSON <-> Lua round trips.

These run through lexbus.rules.test, a dry run of the code the hooks run
(nothing is sent, counted or logged); test_live.py runs rules on live
traffic."""
import json
import re

import lbtest
from lbtest import check, check_eq, test
from luatest import lua_bus, method

ROUTES = r"""
return {
  { name = "no-deletes", call = "user-service.delete*",
    refuse = { code = "FORBIDDEN", message = "deletes are disabled" } },
  { name = "moved", call = "users.*", to = "user-service" },
  { name = "renamed", call = "user-service.getUserById", rename = "getUser" },
  { name = "audit-copy", event = "order:>", also = { "audit-service", "billing" } },
  { name = "summary", event = "post:created",
    transform = { id = { ["$var"] = "payload.id" }, by = { ["$var"] = "from" },
                  title = { ["$concat"] = { "[", { ["$var"] = "payload.title" }, "]" } } } },
  { name = "tag", event = "post:*", from = { "writer", "editor" },
    fn = function(m)
      if type(m.payload) ~= "table" then return nil end
      m.payload.tagged = true
      return m
    end },
  { name = "reroute-events", event = "legacy:*", fn = function(m) return { to = "new-service", event = "modern:" .. m.event:sub(8) } end },
  { name = "first", event = "chain:*", fn = function(m) return { payload = { step = 1 } } end },
  { name = "second", event = "chain:*", last = true, fn = function(m) return { payload = { step = m.payload.step + 1, before = m.payload } } end },
  { name = "never", event = "chain:*", fn = function(m) error("not reached") end },
  { name = "hide-hash", response = "user-service.getUser*",
    fn = function(m) if type(m.data) == "table" then m.data.passwordHash = nil; return m end end },
  { name = "dotted", call = { service = "billing.eu", method = "charge" }, rename = "chargeEU" },
  { name = "any-admin", call = "*.admin*", fn = function(m)
      local c = m.claims
      if type(c) == "table" and c.role == "admin" then return nil end
      return false
    end },
}
"""


def dry(c, msg):
    return method(c, "rules.test", msg)


@test
def fixed_actions_and_selection():
    with lua_bus({"routes.lua": ROUTES}) as bus:
        c = bus.client("writer")
        d = dry(c, {"type": "CALL", "to": "user-service", "method": "deleteUser", "params": {"id": 1}})
        check_eq((d["result"], d["code"], d["message"], d["matched"]), ("refused", "FORBIDDEN", "deletes are disabled", ["no-deletes"]), "refuse")
        d = dry(c, {"type": "CALL", "to": "users", "method": "getUserById"})
        check_eq((d["result"], d["to"], d["matched"]), ("changed", "user-service", ["moved"]), "rewrite target (not re-matched)")
        d = dry(c, {"type": "CALL", "to": "user-service", "method": "getUserById"})
        check_eq((d["result"], d["method"]), ("changed", "getUser"), "rename method")
        d = dry(c, {"type": "EMIT", "event": "order:paid:eu", "payload": {"n": 1}})
        check_eq((d["result"], d["also"]), ("changed", ["audit-service", "billing"]), "fan-out, '>' matches the rest")
        d = dry(c, {"type": "EMIT", "event": "order", "payload": {}})
        check_eq((d["result"], d["matched"]), ("pass", []), "'>' needs at least one more segment")
        d = dry(c, {"type": "CALL", "to": "billing.eu", "method": "charge"})
        check_eq(d.get("method"), "chargeEU", "service with a dot, table selector")
        d = dry(c, {"type": "CALL", "to": "billing", "method": "eu.charge"})
        check_eq(d["result"], "pass", "SERVICE.METHOD splits at the first dot")
        d = dry(c, {"type": "EMIT", "event": "unrelated:thing", "payload": {"x": 1}})
        check_eq((d["result"], d["matched"]), ("pass", []), "no rule")
        rules = {r["name"]: r for r in c.call("lexbus", "rules")["data"]["rules"]}
        check_eq((rules["no-deletes"]["matches"], rules["no-deletes"]["refusals"]), (0, 0), "dry runs are not counted")
        check_eq(rules["moved"]["lua"], False, "fixed actions never enter Lua")


@test
def transforms_and_lua_functions():
    with lua_bus({"routes.lua": ROUTES}) as bus:
        c = bus.client("writer")
        d = dry(c, {"type": "EMIT", "event": "post:created", "from": "writer", "payload": {"id": 7, "title": "hi", "body": "x" * 100}})
        check_eq(d["matched"], ["summary", "tag"], "both rules, in file order")
        check_eq(d["payload"], {"id": 7, "by": "writer", "title": "[hi]", "tagged": True}, "JSONLex transform, then the Lua rule")
        d = dry(c, {"type": "EMIT", "event": "post:edited", "from": "stranger", "payload": {"a": 1}})
        check_eq((d["result"], d["matched"]), ("pass", []), "from filters the sender")
        d = dry(c, {"type": "EMIT", "event": "legacy:ping", "payload": 1})
        check_eq((d["to"], d["event"]), ("new-service", "modern:ping"), "fn rewrites target and event")
        d = dry(c, {"type": "EMIT", "event": "chain:x", "payload": None})
        check_eq((d["matched"], d["payload"]), (["first", "second"], {"step": 2, "before": {"step": 1}}),
                 "later rules see earlier changes; last = true stops")
        d = dry(c, {"type": "RESPONSE", "service": "user-service", "method": "getUser", "from": "user-service",
                    "to": "writer", "status": "success", "data": {"name": "ada", "passwordHash": "x"}})
        check_eq((d["result"], d["data"]), ("changed", {"name": "ada"}), "response transform")
        d = dry(c, {"type": "CALL", "to": "ops", "method": "adminReset", "claims": {"role": "user"}})
        check_eq((d["result"], d["code"]), ("refused", "FORBIDDEN"), "return false refuses")
        d = dry(c, {"type": "CALL", "to": "ops", "method": "adminReset", "claims": {"role": "admin"}})
        check_eq(d["result"], "pass", "claims are visible to rules")


TRANSFORMS = [
    {"$var": "payload"},
    {"id": {"$var": "payload.id"}, "n": {"$var": "payload.user.name"}, "t": {"$var": "payload.tags.1"},
     "len": {"$var": "payload.tags.length"}, "nolen": {"$var": "payload.title.length"}, "ghost": {"$var": "payload.nope.x"}},
    {"deep": {"$var": "payload.user.address.city"}, "whole": {"$var": "payload.user"}, "from": {"$var": "from"},
     "ev": {"$var": "event"}, "ctx": {"$var": "context.root"}, "cl": {"$var": "claims.role"}, "all": {"$var": "type"}},
    {"$map": {"array": {"$var": "payload.tags"}, "as": "payload", "expr": {"$concat": [{"$var": "payload"}, "!"]}}},
    {"$if": [{"$gte": [{"$var": "payload.user.age"}, 18]}, "adult", "minor"]},
    {"x": {"$var": "payload.list.0.k"}, "y": {"$var": "payload.list.length"}, "z": {"$var": "payload.esc\u0061ped"}},
    {"big": {"$var": "payload.big"}, "f": {"$var": "payload.f"}, "s": {"$var": "payload.s"}, "e": {"$var": ""}},
]
PAYLOADS = [
    '{"id":7,"title":"hi","tags":["a","b","c"],"user":{"name":"ada","age":36,"address":{"city":"Oslo"}},"list":[{"k":1}]}',
    '{"id":7, "user" : {"name":"bob","age":12}, "tags":[], "title":5}',
    '{"user":{"name":"x","name":"y"},"id":[1,2]}',
    '{"esc\\u0061ped":1,"escaped":2,"big":1234567890123456789,"f":1.0,"s":"\\u00e9\\n"}',
    '[1,2,3]',
    '"just text"',
    'null',
]


@test
def transforms_read_the_frame_as_the_whole_view_would():
    # A transform takes only the parts it reads out of the frame's text;
    # it must see exactly what the expression sees in the whole view as
    # JSON (lexbus.jsonlex over that view is the reference).
    rules = "return {\n" + "".join(
        "  { event = \"t:%d\", transform = bus.json.decode([==[%s]==]) },\n" % (i, json.dumps(t))
        for i, t in enumerate(TRANSFORMS)) + "}\n"
    with lua_bus({"routes.lua": rules}) as bus:
        c = bus.raw()
        c.register("writer")
        for p, text in enumerate(PAYLOADS):
            for i, t in enumerate(TRANSFORMS):
                msg = ('{"type":"CALL","id":"t%d-%d","to":"lexbus","method":"rules.test","params":{"type":"EMIT","event":"t:%d",'
                       '"payload":%s,"context":{"root":"r1"},"claims":{"role":"admin"}}}' % (p, i, i, text))
                c.send(msg.encode())
                r = c.recv()
                check("data" in r, "rules.test answered: %r" % r)
                d = r["data"]
                payload = json.loads(text)
                view = {"type": "EMIT", "from": "writer", "to": "broadcast", "event": "t:%d" % i,
                        "context": {"root": "r1"}, "claims": {"role": "admin"}}
                if p == 2:
                    continue   # a member named twice: below
                view["payload"] = payload
                ref = c.call("lexbus", "jsonlex", {"expr": t, "context": view})
                if ref["status"] == "error":
                    why = ref["error"]["message"].replace("jsonlex: ", "")
                    check_eq((d.get("result"), d.get("code")), ("error", "SCRIPT_ERROR"), "fails as the reference does: %r" % d)
                    check(why in d["message"], "for the same reason: %r vs %r" % (d["message"], why))
                    continue
                check_eq(d.get("result"), "changed", "transform %d on payload %d ran: %r" % (i, p, d))
                check_eq(json.loads(d["payloadText"]), ref["data"], "transform %d on payload %d" % (i, p))
        # A member named twice (rules.test's params went through jansson,
        # which kept one of them): live, it reads as missing where a path
        # meets it, as a full parse would make that object missing.
        sub = bus.client("sub", subscribe=["t:*"])
        c.send(('{"type":"EMIT","event":"t:1","payload":%s}' % PAYLOADS[2]).encode())
        got = sub.recv_type("EVENT")["payload"]
        ref = c.call("lexbus", "jsonlex", {"expr": TRANSFORMS[1], "context": {"payload": {"id": [1, 2]}}})["data"]
        check_eq(got, ref, "a member named twice reads as missing")


GARBAGE = r"""
local f = {}
f.number = function(m) return 42 end
f.badto = function(m) return { to = "not a name!" } end
f.badevent = function(m) return { event = "a::b" } end
f.fn = function(m) return { payload = { f = print } } end
f.nan = function(m) return { payload = 0/0 } end
f.cycle = function(m) local t = {} t.self = t return { payload = t } end
f.deep = function(m) local t = {} for i = 1, 100 do t = { t } end return { payload = t } end
f.mixed = function(m) return { payload = { 1, 2, x = 3 } } end
f.utf8 = function(m) return { payload = "\xff\xfe" } end
f.from = function(m) return { from = "someone-else" } end
f.unknown = function(m) return { colour = "red" } end
f.error = function(m) local x = nil; return x.field end
f.errtable = function(m) error({ code = 1 }) end
f.later = function(m) saved = m; return nil end
f.stale = function(m) return { payload = saved.payload } end
f.also_call = function(m) return { also = { "x" } } end
f.refusecode = function(m) return bus.refuse("not a code", "x") end
local rules = {}
for name, fn in pairs(f) do rules[#rules + 1] = { name = name, event = "g:" .. name, fn = fn } end
rules[#rules + 1] = { name = "also_call", call = "svc.m", fn = f.also_call }
return rules
"""


@test
def garbage_from_rules_is_a_script_error():
    with lua_bus({"routes.lua": GARBAGE}) as bus:
        c = bus.client("g")
        for name, frag in [("number", "returned a number"), ("badto", "not a valid service name"),
                           ("badevent", "not a valid name"), ("fn", "a function is not JSON"),
                           ("nan", "NaN"), ("cycle", "nesting too deep"), ("deep", "nesting too deep"),
                           ("mixed", "not an index"), ("utf8", "not UTF-8"), ("from", "cannot change 'from'"),
                           ("unknown", "unknown field 'colour'"), ("error", "attempt to index a nil value"),
                           ("errtable", "error object is a table"), ("refusecode", "must be like FORBIDDEN")]:
            d = dry(c, {"type": "EMIT", "event": "g:" + name, "payload": {"x": 1}})
            check_eq((d["result"], d["code"]), ("error", "SCRIPT_ERROR"), name)
            check(frag in d["message"], "%s: message %r should say %r" % (name, d["message"], frag))
            check(d["message"].startswith("rule '%s': " % name), "names the rule: %r" % d["message"])
        d = dry(c, {"type": "EMIT", "event": "g:error", "payload": {}})
        check("routes.lua:14:" in d["message"], "script and line: %r" % d["message"])
        dry(c, {"type": "EMIT", "event": "g:later", "payload": {"x": 1}})
        d = dry(c, {"type": "EMIT", "event": "g:stale", "payload": {"x": 1}})
        check("valid only while its rule runs" in d["message"], "a stale view is refused: %r" % d["message"])
        d = dry(c, {"type": "CALL", "to": "svc", "method": "m"})
        check("applies to events" in d["message"], "fan-out of a call: %r" % d["message"])
        errors = {r["name"]: r["errors"] for r in c.call("lexbus", "rules")["data"]["rules"]}
        check_eq(errors["error"], 0, "a dry run's errors are its caller's: not counted")
        check(not re.search(r"warn +\[lua\] rule 'error'", bus.logtext()), "nor logged")


ROUNDTRIP = r"""
return {
  { event = "rt:lua", fn = function(m) return { payload = m.payload } end },
  { event = "rt:text", fn = function(m) return { payload = bus.json.decode(bus.json.encode(m.payload)) } end },
  { event = "rt:string", fn = function(m)
      local v = assert(bus.json.decode(m.payload))
      return { payload = bus.json.decode(bus.json.encode(v)) }
    end },
  { event = "rt:types", fn = function(m)
      local p = assert(bus.json.decode(m.payload))
      local function kind(v)
        if v == bus.null then return "null" end
        if type(v) == "table" then return bus.isarray(v) and "array" or "object" end
        if type(v) == "number" then return math.type(v) end
        return type(v)
      end
      local out = {}
      for k, v in pairs(p) do out[k] = kind(v) end
      out.bigText = tostring(p.big)
      out.emojiLen = utf8.len(p.emoji)
      return { payload = out }
    end },
  { event = "rt:build", fn = function(m)
      return { payload = { emptyObject = {}, emptyArray = bus.array(), list = { 1, 2.5, "x", bus.null },
                           float = 3.0, int = 3, nested = bus.object({}), ["k\0z"] = "nul" } }
    end },
}
"""

SAMPLE = ('{"z":1,"a":[],"o":{},"n":null,"i":-42,"f":1.0,"g":2.5e-8,"big":123456789012345678901234567890,'
          '"huge":1e400,"max":9223372036854775807,"emoji":"h\\u00e9 \\ud83d\\ude00 \\u2028","lone":"\\ud800x",'
          '"nested":{"b":[1,{"c":[[]]}],"a":true},"esc":"q\\"b\\\\s\\/t\\t\\u0001"}')


def check_round_trip(what, text, want, lone=True):
    got = json.loads(text)
    check_eq(got, want, what + ": same value")
    check_eq(list(got.keys()), list(want.keys()), what + ": member order kept")
    check_eq(list(got["nested"].keys()), ["b", "a"], what + ": nested order kept")
    # Python's json keeps int vs float and big integers exactly.
    for k in want:
        check_eq(type(got[k]).__name__, type(want[k]).__name__, "%s: kind of %s" % (what, k))
    if lone:
        check("\\ud800x" in text, what + ": a lone surrogate goes back out as its escape: " + text)
    return got


@test
def json_lua_round_trip_keeps_everything():
    # Through the message view (payload decoded lazily, re-encoded).  The
    # system method's params pass through jansson in lexbusd, which cannot
    # hold integers beyond 64 bits or 1e400: those go in a string below.
    # jansson also refuses lone surrogates.
    small = SAMPLE.replace('"big":123456789012345678901234567890,"huge":1e400,', "").replace('"lone":"\\ud800x",', "")
    with lua_bus({"routes.lua": ROUNDTRIP}) as bus:
        c = bus.raw()
        c.register("rt")
        for ev in ("rt:lua", "rt:text"):
            c.sock.sendall(lbtest.frame(('{"type":"CALL","id":"%s","to":"lexbus","method":"rules.test","params":'
                                         '{"type":"EMIT","event":"%s","payload":%s}}' % (ev, ev, small)).encode()))
            d = c.recv()["data"]
            check_round_trip(ev, d["payloadText"], json.loads(small), lone=False)
        # JSON text -> Lua -> JSON text, everything (bus.json.decode/encode).
        d = c.call("lexbus", "rules.test", {"type": "EMIT", "event": "rt:string", "payload": SAMPLE})["data"]
        text = d["payloadText"]
        check_round_trip("text", text, json.loads(SAMPLE))
        check('"big":123456789012345678901234567890' in text and '"huge":1e400' in text,
              "big numbers kept as written: " + text)
        d = c.call("lexbus", "rules.test", {"type": "EMIT", "event": "rt:types", "payload": SAMPLE})["data"]["payload"]
        check_eq((d["a"], d["o"], d["n"], d["i"], d["f"], d["big"], d["huge"], d["max"], d["nested"]),
                 ("array", "object", "null", "integer", "float", "userdata", "userdata", "integer", "object"),
                 "Lua types: empty [] vs {}, null, integer vs float, bignums")
        check_eq((d["bigText"], d["emojiLen"]), ("123456789012345678901234567890", 6), "bignum text, UTF-8 (6 code points)")
        r = c.call("lexbus", "rules.test", {"type": "EMIT", "event": "rt:build"})["data"]
        check_eq(json.loads(r["payloadText"]), {"emptyObject": {}, "emptyArray": [], "list": [1, 2.5, "x", None],
                                                "float": 3.0, "int": 3, "nested": {}, "k\u0000z": "nul"},
                 "tables built in Lua")
        check('"float":3.0' in r["payloadText"] and '"int":3' in r["payloadText"], "3.0 stays a float: " + r["payloadText"])


@test
def bad_routes_stop_start_up_with_file_and_reason():
    for text, frag in [("return { { event = 'x:*' } }", "has no action"),
                       ("return { { event = 'x:**', to = 'a' } }", "not an event pattern"),
                       ("return { { call = 'nodot', to = 'a' } }", "SERVICE.METHOD"),
                       ("return { { event = 'x', call = 'a.b', to = 'a' } }", "give one of"),
                       ("return { { event = 'x', evnt = 1, to = 'a' } }", "unknown field 'evnt'"),
                       ("return { { event = 'x', fn = function() end, to = 'a' } }", "not both"),
                       ("return { { event = 'x', transform = { ['$var'] = 'a' }, also = 'bad name!' } }", "not a valid service name"),
                       ("return { rules = {} }", "list of rules"),
                       ("return { { event = 'x', to = 'a' }", "routes.lua:1: '}' expected")]:
        with lua_bus({"routes.lua": text}, start=False) as bus:
            bus.start(wait=False)
            rc = bus.proc.wait(20)
            check_eq(rc, 1, "start-up fails for %r" % text)
            check(frag in bus.logtext(), "log names %r:\n%s" % (frag, bus.logtext()[-800:]))
            check("[plugin lua]" in bus.logtext(), "and the plugin")


lbtest.main()
