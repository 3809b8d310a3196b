"""The Exprsn forms of CRUD and JSONLex through the lua plugin: Socket.IO
clients (the real socket.io-client, as tests/websocket installs it) send
ipc:create|read|update|delete and ipc:jsonlex; the websocket transport
makes CRUD messages and lexbus.jsonlex CALLs of them, and crud.lua's one
mapping serves them like any other CRUD message."""
import lbtest
from lbtest import check_eq, test
from luatest import answer, scripts_dir
from wstest import Sio, ws_bus

CRUD = """return { resources = { posts = { create = { required = { "content" }, types = { content = "string" } } } } }"""


@test
def socketio_crud_and_jsonlex_through_crud_lua():
    lua = "[plugin lua]\ndir = %s\n" % scripts_dir({"crud.lua": CRUD})
    with ws_bus(plugins_after=lua) as bus, Sio() as sio:
        tl = bus.client("timeline", resources=["posts"])
        sio.connect("d", "http://127.0.0.1:%d/ipc/data" % bus.port, transports=["websocket"])
        for ev, arg, method, params in (
                ("ipc:create", {"resource": "posts", "data": {"content": "hi"}}, "posts.create",
                 {"resource": "posts", "op": "create", "data": {"content": "hi"}}),
                ("ipc:read", {"resource": "posts", "query": {"userId": "1"}}, "posts.read",
                 {"resource": "posts", "op": "read", "query": {"userId": "1"}}),
                ("ipc:update", {"resource": "posts", "id": 7, "data": {"content": "x"}}, "posts.update",
                 {"resource": "posts", "op": "update", "key": 7, "data": {"content": "x"}}),
                ("ipc:delete", {"resource": "posts", "id": 7}, "posts.delete", {"resource": "posts", "op": "delete", "key": 7})):
            tag = "t-" + ev
            sio.emit("d", ev, arg, ack=True, tag=tag)
            call = answer(tl, {"done": ev})
            check_eq((call["method"], call["params"], call["from"]), (method, params, "data"), ev)
            r = sio.expect(lambda m: m["ev"] == "ack" and m.get("tag") == tag, 10, "ack of " + ev)["args"]
            check_eq((r[0]["success"], r[0].get("data")), (True, {"done": ev}), "%s answered: %r" % (ev, r))
        r = sio.call("d", "ipc:create", {"resource": "posts", "data": {"content": 5}})
        check_eq((r[0]["success"], r[0]["code"]), (False, "INVALID_MESSAGE"), "crud.lua's validation: %r" % r)
        r = sio.call("d", "ipc:read", {"resource": "ghosts"})
        check_eq((r[0]["success"], r[0]["code"]), (False, "SERVICE_NOT_FOUND"), "unknown resource: %r" % r)
        r = sio.call("d", "ipc:jsonlex", {"expression": {"$concat": ["hi ", {"$var": "n"}]}, "context": {"n": "ada"}})
        check_eq((r[0]["success"], r[0].get("result")), (True, "hi ada"), "jsonlex: %r" % r)


lbtest.main()
