"""The Lua sandbox through the real daemon: what scripts cannot reach,
the instruction budget, the memory cap, and that the bus keeps serving."""
import time

import lbtest
from lbtest import check, check_eq, test
from luatest import lua_bus

PROBES = r"""
local probes = {
  globals = function()
    local gone = {}
    for _, k in ipairs({ "io", "os.execute", "os.exit", "os.getenv", "os.remove", "debug", "package", "dofile",
                         "loadfile", "string.dump", "coroutine", "require.path", "collectgarbage.step" }) do
      local v = _G
      for part in k:gmatch("[^.]+") do v = type(v) == "table" and rawget(v, part) or nil end
      if v ~= nil then gone[#gone + 1] = k end
    end
    return #gone == 0 and "none" or table.concat(gone, ",")
  end,
  binary = function() return load("\27Lua\84\0", "x", "b") end,
  binary_mode_t = function() local f, e = load("\27Lua\84\0") return f == nil and e or "loaded!" end,
  load_env = function() return load("return io == nil and os.execute == nil and bus ~= nil")() end,
  load_own_env = function() return load("x = 1; return x", "c", "t", {})() end,
  require_up = function() return require("../etc/passwd") end,
  require_abs = function() return require("/etc/passwd") end,
  require_runtime = function() return require("othermod") end,
  require_loaded = function() return require("helper").answer end,
  gc_collect = function() return collectgarbage("collect") end,
  gc_count = function() return type(collectgarbage("count")) end,
  string_mt = function() return tostring(getmetatable("")) end,
  gc_meta = function() return setmetatable({}, { __gc = function() end }) end,
  protected_mt = function() return setmetatable(bus.array(), {}) end,
  real_globals = function() return tostring(rawget(_G, "io")) .. tostring(_G == _ENV) end,
  libs_private = function() return type(string.upper) end,
  pcall_budget = function() local ok = pcall(function() while true do end end) return "escaped " .. tostring(ok) end,
  xpcall_budget = function() xpcall(function() while true do end end, function(e) return e end) return "escaped" end,
  pcall_memory = function() pcall(string.rep, "x", 1 << 30) return "escaped" end,
  loop = function() local i = 0 while true do i = i + 1 end end,
  rep_bomb = function() return #string.rep("x", 1 << 30) end,
  table_bomb = function() local t = {} for i = 1, 1e9 do t[i] = { i } end return #t end,
  concat_bomb = function() local s = "x" for i = 1, 64 do s = s .. s end return #s end,
  recursion = function() local function f(n) return f(n + 1) + 1 end return f(1) end,
  print_ok = function() print("hello from a rule", 42) return "printed" end,
  log_flood = function() for i = 1, 500 do bus.log("warn", "flood " .. i) end return "flooded" end,
}
local rules = {}
for name, fn in pairs(probes) do
  rules[#rules + 1] = { name = name, event = "sb:" .. name, fn = function(m) return { payload = fn() } end }
end
return rules
"""

HELPER = "return { answer = 42 }\n"
# Another script changes its own copy of `string`: nobody else's.
JSONLEX = "string.upper = nil\nrequire('helper')\nreturn {}\n"


def probe(c, name):
    r = c.call("lexbus", "rules.test", {"type": "EMIT", "event": "sb:" + name}, timeout=30)
    check_eq(r.get("status"), "success", "rules.test %s: %r" % (name, r))
    return r["data"]


def refused(c, name, frag):
    d = probe(c, name)
    check_eq((d["result"], d.get("code")), ("error", "SCRIPT_ERROR"), "%s: %r" % (name, d))
    check(frag in d["message"], "%s: %r should say %r" % (name, d["message"], frag))
    return d


@test
def nothing_outside_the_sandbox():
    with lua_bus({"routes.lua": PROBES, "helper.lua": HELPER, "jsonlex.lua": JSONLEX, "othermod.lua": HELPER}) as bus:
        c = bus.client("prober")
        check_eq(probe(c, "globals")["payload"], "none", "no io, os.execute, debug, package, dofile, loadfile, string.dump")
        refused(c, "binary", "binary chunks are not available")
        check("binary" in probe(c, "binary_mode_t")["payload"], "text mode refuses a binary chunk")
        check_eq(probe(c, "load_env")["payload"], True, "load() gets the script's environment: no io, no os.execute")
        check_eq(probe(c, "load_own_env")["payload"], 1, "load() with an explicit environment")
        refused(c, "require_up", "is not a module name")
        refused(c, "require_abs", "is not a module name")
        refused(c, "require_runtime", "works at load time only")
        check_eq(probe(c, "require_loaded")["payload"], 42, "a module loaded at start-up is available")
        refused(c, "gc_collect", "only \"count\"")
        check_eq(probe(c, "gc_count")["payload"], "number", "collectgarbage('count')")
        check_eq(probe(c, "string_mt")["payload"], "false", "the string metatable is hidden")
        refused(c, "gc_meta", "__gc is not available")
        refused(c, "protected_mt", "protected metatable")
        check_eq(probe(c, "real_globals")["payload"], "niltrue", "_G is the script's own environment")
        check_eq(probe(c, "libs_private")["payload"], "function", "another script's string.upper = nil stays there")
        check_eq(probe(c, "print_ok")["payload"], "printed", "print goes to the log")
        check("routes.lua: hello from a rule\t42" in bus.logtext(), "print logged with the script name")
        check_eq(probe(c, "log_flood")["payload"], "flooded", "a rule that logs in a loop")
        time.sleep(1.1)
        probe(c, "print_ok")
        log = bus.logtext()
        check(log.count("routes.lua: flood ") <= 100, "at most 100 script lines a second (%d)" % log.count("routes.lua: flood "))
        check("more lines in the last second (dropped" in log, "the dropped lines are counted in the log")


@test
def runaway_rules_are_stopped_and_the_bus_keeps_serving():
    with lua_bus({"routes.lua": PROBES, "helper.lua": HELPER}, extra="max_memory = 16M\n") as bus:
        c = bus.client("prober")
        other = bus.client("bystander", methods=["echo"])
        base = bus.stats()["plugins"]["lua"]["lua"]["memory"]
        d = refused(c, "loop", "instruction budget exceeded (1000000)")
        check("routes.lua:" in d["message"], "names the script and line: %r" % d["message"])
        refused(c, "pcall_budget", "instruction budget exceeded")
        refused(c, "xpcall_budget", "instruction budget exceeded")
        refused(c, "pcall_memory", "memory cap of 16777216 bytes reached")
        refused(c, "rep_bomb", "memory cap")
        refused(c, "concat_bomb", "memory cap")
        d = refused(c, "recursion", "")
        check("stack overflow" in d["message"] or "memory cap" in d["message"], "deep recursion: %r" % d["message"])
        for _ in range(3):
            c2 = probe(c, "gc_count")
            check_eq(c2["result"], "changed", "rules still run after a stop")
        # The bus itself never stalled: calls between services go through.
        c.send({"type": "CALL", "id": "e1", "to": "bystander", "method": "echo", "params": {}})
        check_eq(other.recv()["id"], "e1", "other traffic delivered")
        other.send({"type": "RESPONSE", "id": "e1", "status": "success", "data": 1})
        check_eq(c.recv()["status"], "success", "and answered")
        st = bus.stats()["plugins"]["lua"]["lua"]
        check(st["budgetStops"] >= 3 and st["memoryStops"] >= 3, "stops counted: %r" % st)
        check(st["memory"] < base + 2 * 1024 * 1024, "memory given back after the bombs: %r (base %d)" % (st, base))
    with lua_bus({"routes.lua": PROBES, "helper.lua": HELPER},
                 extra="max_memory = 16M\nmax_instructions = 1000000000\n") as bus:
        c = bus.client("prober")
        refused(c, "table_bomb", "memory cap of 16777216 bytes reached")
        check_eq(probe(c, "gc_count")["result"], "changed", "serving after a table bomb")


@test
def bad_keys_are_refused_with_file_and_line():
    for extra, frag in [("max_memory = 10\n", "max_memory must be 1M to 16G"),
                        ("max_instructions = 5\n", "max_instructions"),
                        ("jsonlex_extensions = maybe\n", "jsonlex_extensions"),
                        ("colour = red\n", "unknown key 'colour'")]:
        with lua_bus({}, extra=extra, start=False) as bus:
            bus.start(wait=False)
            check_eq(bus.proc.wait(20), 1, "start-up fails for %r" % extra)
            log = bus.logtext()
            check(frag in log and "bus.conf:" in log, "%r: log says %r with file:line:\n%s" % (extra, frag, log[-600:]))
    with lua_bus(dir="/nonexistent/lua-scripts", start=False) as bus:
        bus.start(wait=False)
        check_eq(bus.proc.wait(20), 1, "a missing scripts folder stops start-up")
        check("/nonexistent/lua-scripts" in bus.logtext(), "and is named")


lbtest.main()
