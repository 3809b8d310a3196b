"""crud.lua mappings through the real daemon.  Plugin ABI v1 has no
rewrite hook, so the mapping is exercised with lexbus.crud.test (the code
the hook will run); a real CRUD message is still answered by the core."""
import json

import lbtest
from lbtest import check, check_eq, test
from luatest import lua_bus

CRUD = r"""
return { resources = {
  posts = {
    create = { required = { "content" }, types = { content = "string", tags = "array", score = "integer" } },
    update = { types = { content = "string" } },
    read = { types = { userId = "string" } },
    transform = function(req)
      if req.op == "create" then
        if req.data.content == "spam" then return bus.refuse("FORBIDDEN", "no spam") end
        req.data.createdBy = req.from
      end
      return req
    end,
  },
  users = { service = "user-service" },
  broken = { transform = function(req) return req.nope.x end },
} }
"""


def test_map(c, **req):
    r = c.call("lexbus", "crud.test", req)
    check_eq(r.get("status"), "success", "crud.test answered: %r" % r)
    return r["data"]


@test
def requests_become_calls():
    with lua_bus({"crud.lua": CRUD}) as bus:
        c = bus.client("writer")
        d = test_map(c, op="create", resource="posts", data={"content": "hi", "tags": ["a"]}, declaredBy="timeline")
        check_eq((d["result"], d["to"], d["method"]), ("call", "timeline", "posts.create"), "declared service, method")
        check_eq(d["params"], {"resource": "posts", "op": "create", "data": {"content": "hi", "tags": ["a"], "createdBy": "writer"}},
                 "params (transformed; absent members left out)")
        d = test_map(c, op="read", resource="posts", query={"userId": "1"}, declaredBy="timeline", to="archive")
        check_eq((d["to"], d["params"]), ("archive", {"resource": "posts", "op": "read", "query": {"userId": "1"}}), "'to' wins")
        d = test_map(c, op="delete", resource="users", key="42")
        check_eq((d["to"], d["method"], d["params"]), ("user-service", "users.delete", {"resource": "users", "op": "delete", "key": "42"}),
                 "crud.lua's service when none declared it")
        d = test_map(c, op="update", resource="comments", key=7, data={"x": 1}, declaredBy="talk")
        check_eq((d["result"], d["params"]), ("call", {"resource": "comments", "op": "update", "key": 7, "data": {"x": 1}}),
                 "a resource crud.lua does not list passes through unvalidated")


@test
def refusals_name_what_is_wrong():
    with lua_bus({"crud.lua": CRUD}) as bus:
        c = bus.client("writer")
        for req, code, frag in [
            ({"op": "read", "resource": "ghosts"}, "SERVICE_NOT_FOUND", "resource 'ghosts'"),
            ({"op": "drop", "resource": "posts", "declaredBy": "t"}, "INVALID_MESSAGE", "create, read, update or delete"),
            ({"op": "create", "resource": "bad name!", "data": {}}, "INVALID_MESSAGE", "\"resource\""),
            ({"op": "create", "resource": "posts", "declaredBy": "t"}, "INVALID_MESSAGE", "posts.create needs \"data\""),
            ({"op": "update", "resource": "posts", "data": {}, "declaredBy": "t"}, "INVALID_MESSAGE", "needs a \"key\""),
            ({"op": "delete", "resource": "posts", "declaredBy": "t"}, "INVALID_MESSAGE", "needs a \"key\""),
            ({"op": "create", "resource": "posts", "data": {"tags": []}, "declaredBy": "t"}, "INVALID_MESSAGE", "data.content is required"),
            ({"op": "create", "resource": "posts", "data": {"content": 5}, "declaredBy": "t"}, "INVALID_MESSAGE", "data.content must be a string"),
            ({"op": "create", "resource": "posts", "data": {"content": "x", "score": 1.5}, "declaredBy": "t"}, "INVALID_MESSAGE", "must be an integer"),
            ({"op": "read", "resource": "posts", "query": {"userId": 1}, "declaredBy": "t"}, "INVALID_MESSAGE", "query.userId must be a string"),
            ({"op": "create", "resource": "posts", "data": {"content": "spam"}, "declaredBy": "t"}, "FORBIDDEN", "no spam"),
            ({"op": "read", "resource": "broken", "declaredBy": "t"}, "SCRIPT_ERROR", "crud.lua:"),
            ({"op": "read", "resource": "posts", "to": "not a name", "declaredBy": "t"}, "INVALID_MESSAGE", "\"to\""),
        ]:
            d = test_map(c, **req)
            check_eq((d["result"], d["code"]), ("refused", code), "%r" % req)
            check(frag in d["message"], "%r: %r should say %r" % (req, d["message"], frag))
        res = {r["resource"]: r for r in c.call("lexbus", "rules")["data"]["resources"]}
        check_eq((res["posts"]["validated"], res["posts"]["transform"]), (["create", "read", "update"], True), "listed")
        check(res["posts"]["refusals"] >= 5 and res["broken"]["errors"] == 1, "counted: %r" % res)


@test
def bad_crud_lua_stops_start_up():
    for text, frag in [("return { resources = { posts = { create = { required = 'content' } } } }", "required must be a list"),
                       ("return { resources = { posts = { create = { types = { a = 'text' } } } } }", "must be one of string"),
                       ("return { resources = { posts = { colour = 1 } } }", "unknown field 'colour'"),
                       ("return { things = {} }", "unknown field 'things'")]:
        with lua_bus({"crud.lua": text}, start=False) as bus:
            bus.start(wait=False)
            check_eq(bus.proc.wait(20), 1, "start-up fails for %r" % text)
            check(frag in bus.logtext(), "log says %r:\n%s" % (frag, bus.logtext()[-600:]))


@test
def the_cli_and_the_wire_today():
    # Until plugin ABI v2 lets the plugin rewrite CRUD messages, the core
    # answers them SERVICE_NOT_FOUND; the CLI and liblexbus already speak it.
    with lua_bus({"crud.lua": CRUD}) as bus:
        r = bus.cli("crud", "create", "posts", '{"content":"hi"}', "--to", "timeline")
        check_eq(r.returncode, 1, "answered with an error: %s" % r.stderr)
        check_eq(json.loads(r.stderr)["error"]["code"], "SERVICE_NOT_FOUND", "the core's answer today")
        check_eq(bus.cli("crud", "read").returncode, 2, "usage error")
        check_eq(bus.cli("crud", "update", "posts", "k").returncode, 2, "update needs JSON")
        check_eq(bus.cli("crud", "create", "posts", "not json").returncode, 2, "JSON checked")


lbtest.main()
