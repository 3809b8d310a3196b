"""JSONLex through the real daemon: the whole conformance corpus
(tests/lua/jsonlex-cases.jsonl, computed by the reference implementation;
see ../shared/jsonlex/README.md) via lexbus.jsonlex and via the CLI,
named expressions from jsonlex.lua, the extensions, the compiled-form
cache and bus.jsonlex from scripts."""
import json
import concurrent.futures

import lbtest
from lbtest import check, check_eq, test
from luatest import json_equal, load_cases, lua_bus

CASES = load_cases()


def outcome(m):
    """('ok', value) | ('error', code) for an answer to a jsonlex call."""
    if m.get("type") == "RESPONSE" and m.get("status") == "success":
        return ("ok", m.get("data"))
    return ("error", (m.get("error") or {}).get("code"))


def judge(case, kind, value):
    """None when the outcome passes the case, else why not."""
    if case.get("error"):
        if kind != "error":
            return "expected an error, got %r" % (value,)
        if value in ("METHOD_NOT_FOUND", "TIMEOUT", None):
            return "an error, but %r does not count" % (value,)
        return None
    if kind != "ok":
        return "expected %r, got error %r" % (case["expect"], value)
    if not json_equal(value, case["expect"]):
        return "expected %r, got %r" % (case["expect"], value)
    return None


@test
def corpus_through_the_method():
    check_eq(len(CASES), 303, "cases in the corpus")
    with lua_bus() as bus:
        c = bus.client("jsonlex-runner")
        bad = []
        for case in CASES:
            m = c.call("lexbus", "jsonlex", {"expr": case["expr"], "context": case["context"]}, timeout=10)
            why = judge(case, *outcome(m))
            if why:
                bad.append("%s: %s" % (case["name"], why))
        check(not bad, "%d of %d cases failed:\n  %s" % (len(bad), len(CASES), "\n  ".join(bad[:40])))
        st = bus.stats()["plugins"]["lua"]["jsonlex"]
        # The two deepest cases never reach the evaluator: the bus refuses
        # frames nested deeper than its envelope limit (INVALID_MESSAGE).
        check(st["evals"] + st["errors"] >= len(CASES) - 2, "evaluations counted: %r" % st)


def cli_case(bus, case):
    args = ["jsonlex", json.dumps(case["expr"])]
    if case["context"] is not None:
        args.append(json.dumps(case["context"]))
    r = bus.cli(*args, timeout=30)
    if r.returncode == 0:
        return judge(case, "ok", json.loads(r.stdout))
    err = json.loads(r.stderr.strip().splitlines()[-1]).get("error", {}) if r.stderr.strip().startswith("{") else {}
    if r.returncode == 1:
        return judge(case, "error", err.get("code"))
    return "exit %d: %s" % (r.returncode, r.stderr.strip()[:200])


@test
def corpus_through_the_cli():
    with lua_bus() as bus:
        with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
            results = list(pool.map(lambda case: (case["name"], cli_case(bus, case)), CASES))
        bad = ["%s: %s" % (n, why) for n, why in results if why]
        check(not bad, "%d of %d cases failed through the CLI:\n  %s" % (len(bad), len(CASES), "\n  ".join(bad[:40])))


@test
def deep_expressions_are_refused_not_overflowed():
    deep = {"$not": True}
    for _ in range(40):
        deep = {"$not": deep}
    with lua_bus() as bus:
        c = bus.client("deep")
        # 41 levels: within the envelope limit and the evaluator's (128).
        check_eq(outcome(c.call("lexbus", "jsonlex", {"expr": deep})), ("ok", False), "41 levels")
        m = c.call("lexbus", "jsonlex", {"expr": json.loads("[" * 300 + "]" * 300)})
        check_eq(m["type"], "ERROR", "a frame nested 300 deep is refused by the bus")
        check_eq(m["error"]["code"], "INVALID_MESSAGE", "code")
        check("nesting" in m["error"]["message"], "message says why: %r" % m["error"]["message"])
        check_eq(bus.cli("call", "lexbus", "ping").returncode, 0, "the bus still serves")
    # Past the evaluator's own limit (SPEC H7: more than 128 refused),
    # reachable from scripts, which are not bound by the envelope.
    files = {"routes.lua": """
local function chain(n) local e = true for i = 1, n do e = { ["$not"] = e } end return e end
return { { event = "deep:*", fn = function(m)
  local ok, err = pcall(bus.jsonlex, chain(m.payload), {})
  return { payload = { ok = ok, err = not ok and tostring(err) or bus.null } }
end } }
"""}
    with lua_bus(files) as bus:
        c = bus.client("deep2")
        r = c.call("lexbus", "rules.test", {"type": "EMIT", "event": "deep:ok", "payload": 127})["data"]
        check_eq(r["payload"], {"ok": True, "err": None}, "127 levels evaluate")
        r = c.call("lexbus", "rules.test", {"type": "EMIT", "event": "deep:no", "payload": 200})["data"]
        check(not r["payload"]["ok"] and "deeper" in r["payload"]["err"] or "too deep" in r["payload"]["err"],
              "200 levels refused: %r" % r)


@test
def extensions_and_their_switch():
    exprs = [
        ({"$gte": [{"$var": "age"}, 18]}, {"age": 25}, True),   # Exprsn's own IPC test
        ({"$lte": ["b", "a"]}, {}, False),
        ({"$length": "h\u00e9llo"}, {}, 5),
        ({"$length": {"$var": "xs"}}, {"xs": [1, 2, 3]}, 3),
        ({"$substring": ["h\u00e9llo", 1, 3]}, {}, "\u00e9ll"),
        ({"$substring": ["hello", -3]}, {}, "llo"),
        ({"$reduce": {"array": [1, 2, 3], "initial": "", "expr": {"$concat": [{"$var": "acc"}, {"$var": "item"}]}}}, {}, "123"),
        ({"$get": [{"$var": "u"}, "a.b"]}, {"u": {"a": {"b": 7}}}, 7),
        ({"$has": [{"$var": "u"}, "a"]}, {"u": {"a": None}}, True),
        ({"$has": [[1, 2], "2"]}, {}, False),
    ]
    with lua_bus() as bus:
        c = bus.client("ext")
        for expr, ctx, want in exprs:
            got = outcome(c.call("lexbus", "jsonlex", {"expr": expr, "context": ctx}))
            check(got[0] == "ok" and json_equal(got[1], want), "%r -> %r, want %r" % (expr, got, want))
        for bad in ({"$length": 5}, {"$substring": ["x", 1.5]}, {"$get": [{}, 1]}, {"$has": [{}, None]}):
            check_eq(outcome(c.call("lexbus", "jsonlex", {"expr": bad}))[0], "error", "%r fails" % (bad,))
    with lua_bus(extra="jsonlex_extensions = no\n") as bus:
        c = bus.client("noext")
        got = outcome(c.call("lexbus", "jsonlex", {"expr": {"$gte": [2, 1]}}))
        check_eq(got, ("error", "SCRIPT_ERROR"), "with extensions off, $gte is an unknown operator (H4)")


@test
def named_expressions_and_bad_params():
    files = {"jsonlex.lua": """
return { expressions = {
  adult = { ["$gte"] = { { ["$var"] = "age" }, 18 } },
  greeting = bus.json.decode([[{"$concat": ["hi ", {"$var": "name"}]}]]),
} }
"""}
    with lua_bus(files) as bus:
        c = bus.client("named")
        check_eq(outcome(c.call("lexbus", "jsonlex", {"name": "adult", "context": {"age": 17}})), ("ok", False), "adult")
        check_eq(outcome(c.call("lexbus", "jsonlex", {"name": "greeting", "context": {"name": "ada"}})), ("ok", "hi ada"), "greeting")
        check_eq(outcome(c.call("lexbus", "jsonlex", {"name": "nope"}))[1], "INVALID_MESSAGE", "unknown name")
        check_eq(outcome(c.call("lexbus", "jsonlex", {"context": {}}))[1], "INVALID_MESSAGE", "no expr")
        r = bus.cli("jsonlex", "--name", "adult", '{"age": 30}')
        check_eq((r.returncode, r.stdout.strip()), (0, "true"), "CLI --name")
        r = bus.cli("jsonlex", "not json")
        check_eq(r.returncode, 2, "EXPR must be JSON (usage error)")


@test
def each_expression_is_compiled_once():
    with lua_bus(extra="jsonlex_cache = 4\n") as bus:
        c = bus.client("cache")
        expr = {"$concat": [{"$var": "a"}, "!"]}
        for i in range(50):
            check_eq(outcome(c.call("lexbus", "jsonlex", {"expr": expr, "context": {"a": i}})), ("ok", "%d!" % i), "eval %d" % i)
        cache = bus.stats()["plugins"]["lua"]["jsonlex"]["cache"]
        check_eq((cache["misses"], cache["hits"]), (1, 49), "one compile, 49 hits")
        # Member order is part of the key: the first key decides (SPEC H6).
        a = outcome(c.call("lexbus", "jsonlex", {"expr": {"x": 1, "$var": "a"}, "context": {"a": 2}}))
        b = outcome(c.call("lexbus", "jsonlex", {"expr": {"$var": "a", "x": 1}, "context": {"a": 2}}))
        check_eq((a, b), (("ok", {"x": 1, "$var": "a"}), ("ok", 2)), "order kept apart")
        for i in range(10):
            c.call("lexbus", "jsonlex", {"expr": {"$concat": ["k", i]}})
        cache = bus.stats()["plugins"]["lua"]["jsonlex"]["cache"]
        check_eq(cache["entries"], 4, "bounded by jsonlex_cache")
        check(cache["evictions"] >= 8, "least recently used evicted: %r" % cache)


@test
def scripts_call_jsonlex():
    files = {"routes.lua": """
local isAdult = bus.jsonlex_compile({ ["$gte"] = { { ["$var"] = "age" }, 18 } })
return {
  { name = "adults-only", event = "club:enter",
    fn = function(m)
      if not isAdult(m.payload) then return bus.refuse("FORBIDDEN", "adults only") end
      local greeting = bus.jsonlex({ ["$concat"] = { "welcome ", { ["$var"] = "name" } } }, m.payload)
      return { payload = { greeting = greeting, deep = bus.jsonlex(bus.json.decode('{"$var":"a.b"}'), {a = {b = bus.null}}) } }
    end },
  { name = "bad-expr", event = "club:bad",
    fn = function(m) return { payload = bus.jsonlex({ ["$var"] = 5 }, {}) } end },
}
"""}
    with lua_bus(files) as bus:
        c = bus.client("club")
        r = c.call("lexbus", "rules.test", {"type": "EMIT", "event": "club:enter", "payload": {"age": 20, "name": "ada"}})
        check_eq(r["data"]["result"], "changed", "rule ran: %r" % r)
        check_eq(r["data"]["payload"], {"greeting": "welcome ada", "deep": None}, "payload")
        r = c.call("lexbus", "rules.test", {"type": "EMIT", "event": "club:enter", "payload": {"age": 12, "name": "bo"}})
        check_eq((r["data"]["result"], r["data"]["code"]), ("refused", "FORBIDDEN"), "refused")
        r = c.call("lexbus", "rules.test", {"type": "EMIT", "event": "club:bad"})
        check_eq((r["data"]["result"], r["data"]["code"]), ("error", "SCRIPT_ERROR"), "evaluation error is a script error")
        check("routes.lua:11:" in r["data"]["message"] and "$var needs a string" in r["data"]["message"],
              "names the script line and the reason: %r" % r["data"]["message"])


lbtest.main()
