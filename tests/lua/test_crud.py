"""CRUD through the real daemon: the rewrite hook turns a CRUD message
into the CALL crud.lua maps it to, so the caller gets a RESPONSE with the
same id and the error semantics of any call.  End to end to a serving
instance (all four ops, an unknown resource, a validation failure, the
target gone mid-call), from raw frames, the CLI and liblexbus; the mapping
itself in detail through lexbus.crud.test (a dry run of the same code)."""
import json
import os
import subprocess
import threading

import lbtest
from lbtest import check, check_eq, test
import luatest
from luatest import lua_bus, method

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
    return method(c, "crud.test", req)


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
        check_eq((res["posts"]["refusals"], res["broken"]["errors"]), (0, 0), "dry runs are not counted")


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


def crud(c, cid, **req):
    msg = {"type": "CRUD", "id": cid}
    msg.update(req)
    c.send(msg)


def answer(svc, data=None):
    """Answers the next CALL with {"method", "params"} (or data)."""
    return luatest.answer(svc, data if data is not None else (lambda call: {"method": call["method"], "params": call["params"]}))


def response(c, cid):
    r = c.recv_type("RESPONSE")
    check_eq(r["id"], cid, "the RESPONSE carries the CRUD's id")
    return r


@test
def crud_end_to_end_to_a_serving_instance():
    with lua_bus({"crud.lua": CRUD}) as bus:
        tl = bus.client("timeline", resources=["posts", "comments"])
        other = bus.client("archive")
        c = bus.client("writer")
        crud(c, "k1", op="create", resource="posts", data={"content": "hi", "tags": ["a"]})
        call = answer(tl)
        check_eq((call["type"], call["to"], call["method"], call["from"]), ("CALL", "timeline", "posts.create", "writer"),
                 "a CALL to the service that declared the resource")
        check_eq(call["params"], {"resource": "posts", "op": "create", "data": {"content": "hi", "tags": ["a"], "createdBy": "writer"}},
                 "params {resource, op, data} (transformed by crud.lua)")
        check(not any(k in call for k in ("op", "resource", "data", "key", "query")), "the CRUD members moved into params: %r" % call)
        r = response(c, "k1")
        check_eq((r["status"], r["data"]["method"]), ("success", "posts.create"), "the callee's answer")
        crud(c, "k2", op="read", resource="posts", query={"userId": "1"})
        check_eq(answer(tl)["params"], {"resource": "posts", "op": "read", "query": {"userId": "1"}}, "read with a query")
        response(c, "k2")
        crud(c, "k3", op="update", resource="posts", key="p1", data={"content": "edited"})
        check_eq(answer(tl)["params"], {"resource": "posts", "op": "update", "key": "p1", "data": {"content": "edited"}}, "update")
        response(c, "k3")
        crud(c, "k4", op="delete", resource="comments", key=9)
        call = answer(tl)
        check_eq((call["method"], call["params"]), ("comments.delete", {"resource": "comments", "op": "delete", "key": 9}),
                 "delete of another declared resource (not in crud.lua: unvalidated)")
        response(c, "k4")
        crud(c, "k5", op="read", resource="posts", to="archive")
        check_eq(answer(other)["method"], "posts.read", "\"to\" wins over the declaring service")
        response(c, "k5")
        tl.expect_nothing(0.1)
        # Refusals are error RESPONSEs with the CRUD's id.
        crud(c, "k6", op="read", resource="ghosts")
        r = response(c, "k6")
        check_eq((r["status"], r["error"]["code"]), ("error", "SERVICE_NOT_FOUND"), "unknown resource")
        check("resource 'ghosts'" in r["error"]["message"], "names the resource: %r" % r["error"])
        crud(c, "k7", op="create", resource="posts", data={"content": 5})
        r = response(c, "k7")
        check_eq(r["error"]["code"], "INVALID_MESSAGE", "validation failure")
        check("data.content must be a string" in r["error"]["message"], "names the field: %r" % r["error"])
        crud(c, "k8", op="create", resource="posts", data={"content": "spam"})
        check_eq(response(c, "k8")["error"], {"code": "FORBIDDEN", "message": "no spam"}, "crud.lua's transform refuses")
        tl.expect_nothing(0.1)
        c.send({"type": "CRUD", "op": "read", "resource": "ghosts"})
        check_eq(c.recv_type("ERROR")["error"]["code"], "SERVICE_NOT_FOUND", "without an id: an ERROR")
        # The target goes away mid-call.
        crud(c, "k9", op="read", resource="posts")
        tl.recv_type("CALL")
        tl.close()
        r = response(c, "k9")
        check_eq(r["error"]["code"], "SERVICE_UNAVAILABLE", "the bus answers for a callee that went away")
        crud(c, "k10", op="read", resource="posts")
        check_eq(response(c, "k10")["error"]["code"], "SERVICE_NOT_FOUND", "and its resources went with it")
        st = bus.stats()["plugins"]["lua"]
        check_eq((st["crud_requests"], st["crud_refusals"]), (11, 5), "counted: %r" % st)
        posts = [x for x in st["resources"] if x["resource"] == "posts"][0]
        check_eq((posts["requests"], posts["refusals"]), (7, 2), "per resource: %r" % posts)


def serve_in_thread(svc, n):
    calls = []

    def run():
        for _ in range(n):
            calls.append(answer(svc))
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, calls


@test
def the_cli_and_liblexbus():
    with lua_bus({"crud.lua": CRUD}) as bus:
        tl = bus.client("timeline", resources=["posts"])
        t, calls = serve_in_thread(tl, 4)
        for args, method in [(("create", "posts", '{"content":"hi"}'), "posts.create"),
                             (("read", "posts", "--query", '{"userId":"1"}'), "posts.read"),
                             (("update", "posts", "p1", '{"content":"x"}'), "posts.update"),
                             (("delete", "posts", "p1"), "posts.delete")]:
            r = bus.cli("crud", *args)
            check_eq(r.returncode, 0, "lexbus crud %s: %s" % (" ".join(args), r.stderr))
            check_eq(json.loads(r.stdout)["method"], method, "the answer printed")
        t.join(10)
        check_eq([c["params"].get("key") for c in calls], [None, None, "p1", "p1"], "keys")
        r = bus.cli("crud", "read", "ghosts")
        check_eq(r.returncode, 1, "an error answer: %s" % r.stderr)
        check_eq(json.loads(r.stderr)["error"]["code"], "SERVICE_NOT_FOUND", "printed")
        r = bus.cli("crud", "create", "posts", '{"content":"x"}', "--to", "nobody")
        check_eq((r.returncode, json.loads(r.stderr)["error"]["code"]), (1, "SERVICE_NOT_FOUND"), "--to")
        check_eq(bus.cli("crud", "read").returncode, 2, "usage error")
        check_eq(bus.cli("crud", "update", "posts", "k").returncode, 2, "update needs JSON")
        check_eq(bus.cli("crud", "create", "posts", "not json").returncode, 2, "JSON checked")
        # liblexbus: lexbus_crud (tests/client/lbdemo.c crud).
        t, calls = serve_in_thread(tl, 4)
        env = dict(os.environ, LEXBUS_URL="unix:" + bus.sock)
        p = subprocess.run([os.path.join(lbtest.BUILDDIR, "tests", "client", "lbdemo"), "crud"], capture_output=True,
                           text=True, env=env, timeout=30)
        t.join(10)
        lines = [json.loads(l) for l in p.stdout.splitlines()]
        check_eq([(l["op"], l.get("result", {}).get("method")) for l in lines[:4]],
                 [("create", "posts.create"), ("read", "posts.read"), ("update", "posts.update"), ("delete", "posts.delete")],
                 "lexbus_crud, all four ops: %r %s" % (lines, p.stderr))
        check_eq(lines[0]["result"]["params"], {"resource": "posts", "op": "create", "data": {"content": "hi", "createdBy": "crud-client"}},
                 "params")
        check_eq((lines[4]["op"], lines[4]["error"]), ("read", "SERVICE_NOT_FOUND"), "unknown resource")


lbtest.main()
