"""Exprsn IPC workers (ioredis 5 + jsonwebtoken from npm, tests/redis/
worker.js) and lexbus services on the same Redis channels: discovery,
events both ways with broker tokens each side verifies, acks, broadcasts
and a worker's broadcast flood, hostile worker messages, CRUD and JSONLex
requests without and with the Lua plugin, calls to workers, and a service on two
nodes getting each worker message once."""
import json
import os
import time

from redisutil import lbtest  # noqa: F401
from lbtest import test, check, check_eq, wait_for
from redisutil import KEY, Redis, Server, Worker, node, rstats, wait_nodes, wait_service


def keyfile(dirname):
    path = os.path.join(dirname, "broker.key")
    with open(path, "w") as f:
        f.write(KEY + "\n")
    os.chmod(path, 0o600)
    return path


def xnode(redis, name, tokens_extra="", redis_extra="", scan="500ms", **kw):
    """A node with [plugin tokens] (the workers' key) and exprsn = yes."""
    import tempfile
    kdir = tempfile.mkdtemp(prefix="lexbus-key-")
    k = keyfile(kdir)
    before = "[plugin tokens]\nkey_file = %s\npeercred_uids = self\n%s\n" % (k, tokens_extra)
    return node(redis, name, plugins_before=before,
                redis_conf="exprsn = yes\nkey_file = %s\nexprsn_scan = %s\n%s" % (k, scan, redis_extra), **kw)


def tstats(bus):
    return bus.stats()["plugins"]["tokens"]


def events(client, n, timeout=5.0):
    return [client.recv_type("EVENT", timeout) for _ in range(n)]


@test
def worker_and_services_exchange_events():
    with Redis() as r:
        n1 = xnode(r, "n1")
        w = Worker(r, "w1")
        try:
            wait_for(lambda: rstats(n1)["state"] == "up", 5, what="n1 up")
            svc = n1.client("svc", subscribe=["user:*"])
            s = wait_service(n1, "w1", timeout=5)
            check_eq(s["sessions"][0]["node"], "ipc", "a worker's node")
            # lexbus -> worker: a token the worker verifies.
            svc.send({"type": "EMIT", "id": "e1", "event": "job:run", "to": "w1", "payload": {"k": 1}, "ack": True})
            check_eq(svc.recv_type("ACK").get("remoteNodes"), 1, "ACK of an EMIT to a worker")
            got = w.expect(lambda m: "got" in m and m["got"]["event"] == "job:run", 5, "job:run")["got"]
            check_eq((got["source"], got["target"], got["data"]), ("svc", "w1", {"k": 1}), "as the worker got it")
            check_eq((got["claims"]["type"], got["claims"]["source"], got["claims"]["target"]), ("broker", "svc", "w1"),
                     "the claims the worker verified")
            check(not [m for m in w.drain() if "rejected" in m], "the worker rejected nothing: %r" % w.seen)
            # worker -> lexbus: an EVENT from the worker with the verified claims.
            w.send(cmd="emit", event="user:updated", target="svc", data={"id": 5})
            ev = svc.recv_type("EVENT")
            check_eq((ev["event"], ev["from"], ev["to"], ev["payload"]), ("user:updated", "w1", "svc", {"id": 5}), "event")
            tok = ev.get("token") or {}
            check_eq((tok.get("type"), tok.get("source"), tok.get("operation"), tok.get("version")),
                     ("broker", "w1", "event", "1.0"), "verified claims of the worker's token %r" % tok)
            check(tok.get("metadata", {}).get("event") == "user:updated" and "id" in tok and "jti" not in tok,
                  "Exprsn's claims as they are: %r" % tok)
            # requireAck: the bus acks after delivery, with a token the worker accepts.
            w.send(cmd="emit", event="user:deleted", target="svc", data={"id": 6}, requireAck=True)
            check_eq(svc.recv_type("EVENT")["event"], "user:deleted", "the acked event")
            ack = w.expect(lambda m: "got" in m and m["got"]["event"] == "ack", 5, "the bus's ack")["got"]
            check_eq((ack["source"], ack["operation"], ack["data"]["originalEvent"]), ("svc", "ack", "user:deleted"),
                     "the ack")
            check(ack["data"]["originalId"].count(".") == 2, "originalId is the original token (as Exprsn's acks)")
            # getActiveServices: KEYS services:* (unprefixed), then GET under
            # ipc:data:; lexbus writes both keys (a worker writes only the
            # second, so workers never list one another).
            w.send(cmd="services")
            names = {s["name"] for s in w.expect(lambda m: "services" in m, 5, "services")["services"]}
            check("svc" in names and "w1" not in names, "the worker's getActiveServices(): %r" % names)
            check(tstats(n1)["verified"] >= 2, "the tokens plugin verified the worker's two tokens: %r" % tstats(n1))
        finally:
            w.close()
            n1.__exit__(None, None, None)


@test
def worker_broadcasts_and_their_flood():
    with Redis() as r:
        n1 = xnode(r, "n1")
        w = Worker(r, "w1")
        try:
            wait_for(lambda: rstats(n1)["state"] == "up", 5, what="n1 up")
            listener = n1.client("listener", subscribe=["user:*"])
            Server(n1, "local")
            time.sleep(0.3)                      # the pattern reaches the plugin's filter
            w.send(cmd="emit", event="user:created", data={"u": 1})
            ev = listener.recv_type("EVENT")
            check_eq((ev["event"], ev["from"], ev.get("to")), ("user:created", "w1", None), "a worker's broadcast (no \"to\")")
            ignored = rstats(n1)["ipc_ignored"]
            w.send(cmd="emit", event="order:paid", data={})
            wait_for(lambda: rstats(n1)["ipc_ignored"] > ignored, 3, what="the unwanted broadcast dropped")
            listener.expect_nothing(0.2)
            # A lexbus broadcast reaches the worker on ipc:broadcast.
            n1.client("announcer").send({"type": "EMIT", "event": "sys:notice", "payload": "hi"})
            got = w.expect(lambda m: "got" in m and m["got"]["event"] == "sys:notice", 5, "sys:notice")["got"]
            check_eq((got["target"], got["data"], got["channel"]), ("broadcast", "hi", "ipc:broadcast"), "broadcast")
            # The flood of a worker's own notifications: the bus stays responsive
            # and verifies no token for them.
            verified, ignored = tstats(n1)["verified"], rstats(n1)["ipc_ignored"]
            w.send(cmd="flood", n=3000)
            c = n1.client("caller")
            worst = 0.0
            deadline = time.time() + 20
            while time.time() < deadline:
                t0 = time.time()
                check_eq(c.call("local", "echo")["status"], "success", "local call during the flood")
                worst = max(worst, time.time() - t0)
                if any("flooded" in m for m in w.drain()):
                    break
            check(worst < 0.25, "a local call took %.3fs during the flood" % worst)
            wait_for(lambda: rstats(n1)["ipc_ignored"] - ignored >= 3000, 10, what="every flood message dropped")
            check(tstats(n1)["verified"] - verified < 5, "tokens verified during the flood: %d" %
                  (tstats(n1)["verified"] - verified))
        finally:
            w.close()
            n1.__exit__(None, None, None)


@test
def hostile_worker_messages_are_refused():
    with Redis() as r:
        n1 = xnode(r, "n1")
        w = Worker(r, "w1")
        try:
            wait_for(lambda: rstats(n1)["state"] == "up", 5, what="n1 up")
            svc = n1.client("svc")
            wait_for(lambda: r.cli("EXISTS", "ipc:data:services:svc").strip() == "1", 3, what="svc's discovery key")
            refused = rstats(n1)["ipc_refused"]
            w.send(cmd="emit", event="a:b", target="svc", data=1, badKey=True)            # forged signature
            w.send(cmd="emit", event="a:b", target="svc", data=2, noToken=True)           # no token
            w.send(cmd="emit", event="a:b", target="svc", data=3, source="admin")         # forged source
            w.send(cmd="emit", event="a:b", target="svc", data=4, tokenTarget="other")    # token for another target
            w.send(cmd="emit", event="a:b", target="svc", data=5, tokenEvent="c:d")       # token for another event
            w.send(cmd="emit", event="a:b", target="svc", data=6, stateful=True)          # exp: null, refused by default
            w.send(cmd="mint", data=7, target="svc", operation="event", metadata={"event": "a:b"})
            minted = w.expect(lambda m: "minted" in m, 5, "a token")["minted"]
            w.send(cmd="revoke", id=minted["id"])
            w.expect(lambda m: "revoked" in m, 5, "the revocation")
            w.send(cmd="emit", event="a:b", target="svc", data=7, token=minted["token"])  # revoked
            r.publish("ipc:svc", "{not json")
            r.publish("ipc:svc", json.dumps({"event": 5, "source": "w1"}))
            r.publish("ipc:svc", "x" * (5 << 20))
            w.send(cmd="emit", event="a:b", target="svc", data=8)                       # the one good one
            ev = svc.recv_type("EVENT")
            check_eq(ev["payload"], 8, "only the good message arrives, first: %r" % ev)
            svc.expect_nothing(0.5)
            s = rstats(n1)
            check(s["ipc_refused"] - refused >= 7, "refusals counted: %r" % s)
            check(s["dropped_bad"] >= 2 and s["dropped_oversized"] >= 1, "garbage counted: %r" % s)
            check("exp: null" in n1.logtext() and "revoked" in n1.logtext(), "the reasons are logged")
        finally:
            w.close()
            n1.__exit__(None, None, None)


@test
def stateful_tokens_without_expiry_follow_the_policy():
    with Redis() as r:
        n1 = xnode(r, "n1", tokens_extra="stateful_ttl = 1h")
        w = Worker(r, "w1")
        try:
            wait_for(lambda: rstats(n1)["state"] == "up", 5, what="n1 up")
            svc = n1.client("svc")
            wait_for(lambda: r.cli("EXISTS", "ipc:data:services:svc").strip() == "1", 3, what="svc's discovery key")
            w.send(cmd="emit", event="a:b", target="svc", data="stateful", stateful=True)
            ev = svc.recv_type("EVENT")
            check_eq((ev["payload"], ev["token"]["exp"], ev["token"]["stateful"]), ("stateful", None, True),
                     "a stateful token with exp: null under stateful_ttl = 1h")
        finally:
            w.close()
            n1.__exit__(None, None, None)


@test
def crud_and_jsonlex_requests_without_lua():
    with Redis() as r:
        n1 = xnode(r, "n1")
        w = Worker(r, "w1")
        try:
            wait_for(lambda: rstats(n1)["state"] == "up", 5, what="n1 up")
            time.sleep(0.2)
            w.send(cmd="emit", event="crud:create", target="bridge", operation="crud",
                   data={"resource": "posts", "data": {"content": "hi"}, "operation": "create"})
            res = w.expect(lambda m: "got" in m and m["got"]["event"] == "crud:result", 5, "crud:result")["got"]
            check_eq((res["data"]["operation"], res["data"]["resource"]), ("create", "posts"), "crud:result %r" % res)
            err = res["data"].get("error") or {}
            check_eq(err.get("code"), "SERVICE_NOT_FOUND", "CRUD without the Lua plugin %r" % res)
            check("CRUD routing" in err.get("message", ""), "the error names the missing CRUD routing: %r" % err)
            w.send(cmd="emit", event="jsonlex:execute", target="bridge", operation="jsonlex",
                   data={"expression": {"$concat": ["a", "b"]}, "context": {}})
            res = w.expect(lambda m: "got" in m and m["got"]["event"] == "jsonlex:result", 5, "jsonlex:result")["got"]
            check_eq((res["data"].get("error") or {}).get("code"), "METHOD_NOT_FOUND", "jsonlex without Lua %r" % res)
            check(not [m for m in w.drain() if "rejected" in m], "the worker accepted the results: %r" % w.seen)
        finally:
            w.close()
            n1.__exit__(None, None, None)


@test
def crud_and_jsonlex_requests_with_lua():
    """With [plugin lua] a worker's crud:* reaches the service that declared
    the resource, as a CALL <resource>.<op>, and its answer comes back as
    crud:result; jsonlex:execute is evaluated by lexbus.jsonlex."""
    with Redis() as r:
        n1 = xnode(r, "n1", plugins_after="[plugin lua]\n")
        w = Worker(r, "w1")
        try:
            wait_for(lambda: rstats(n1)["state"] == "up", 5, what="n1 up")
            svc = n1.client("posts-svc", methods=["posts.create", "posts.read"], resources=["posts"])
            time.sleep(0.2)
            w.send(cmd="emit", event="crud:create", target="bridge", operation="crud",
                   data={"resource": "posts", "data": {"content": "hi"}, "operation": "create"})
            call = svc.recv_type("CALL", 5)
            check_eq((call["method"], call["from"]), ("posts.create", "w1"), "the CRUD request as a CALL %r" % call)
            check_eq((call["params"].get("op"), call["params"].get("data")), ("create", {"content": "hi"}),
                     "the CALL's params %r" % call)
            svc.send({"type": "RESPONSE", "id": call["id"], "status": "success", "data": {"id": 41, "content": "hi"}})
            res = w.expect(lambda m: "got" in m and m["got"]["event"] == "crud:result", 5, "crud:result")["got"]
            check_eq((res["data"]["operation"], res["data"]["resource"], res["data"].get("result")),
                     ("create", "posts", {"id": 41, "content": "hi"}), "crud:result %r" % res)
            check("error" not in res["data"], "no error in %r" % res)
            # A resource nobody declared: an error the worker can read, not silence.
            w.send(cmd="emit", event="crud:read", target="bridge", operation="crud",
                   data={"resource": "nothing", "key": "1", "operation": "read"})
            res = w.expect(lambda m: "got" in m and m["got"]["event"] == "crud:result"
                           and m["got"]["data"]["resource"] == "nothing", 5, "crud:result for nothing")["got"]
            check_eq((res["data"].get("error") or {}).get("code"), "SERVICE_NOT_FOUND", "unknown resource %r" % res)
            w.send(cmd="emit", event="jsonlex:execute", target="bridge", operation="jsonlex",
                   data={"expression": {"$concat": ["a", {"$var": "x"}]}, "context": {"x": "b"}})
            res = w.expect(lambda m: "got" in m and m["got"]["event"] == "jsonlex:result", 5, "jsonlex:result")["got"]
            check_eq(res["data"], {"result": "ab"}, "jsonlex with Lua %r" % res)
            check(not [m for m in w.drain() if "rejected" in m], "the worker accepted the results: %r" % w.seen)
        finally:
            w.close()
            n1.__exit__(None, None, None)


@test
def calls_to_workers_and_lookups_on_a_miss():
    with Redis() as r:
        n1 = xnode(r, "n1", scan="5s")
        try:
            wait_for(lambda: rstats(n1)["state"] == "up", 5, what="n1 up")
            c = n1.client("caller")
            t0 = time.time()
            rsp = c.call("nobody", "x")
            check_eq(rsp["error"]["code"], "SERVICE_NOT_FOUND", "a call to no service and no worker")
            check("no Exprsn worker" in rsp["error"]["message"] and time.time() - t0 < 0.5, "%r" % rsp)
            w = Worker(r, "late")
            try:
                # Before any scan: found by the lookup on a miss, the event delivered.
                c.send({"type": "EMIT", "event": "hello:there", "to": "late", "payload": 1})
                got = w.expect(lambda m: "got" in m and m["got"]["event"] == "hello:there", 5, "the event")["got"]
                check_eq(got["data"], 1, "event to a worker found by lookup")
                rsp = c.call("late", "anything")
                check_eq(rsp["error"]["code"], "METHOD_NOT_FOUND", "a CALL to a worker %r" % rsp)
                wait_service(n1, "late", timeout=1)
            finally:
                w.close()
        finally:
            n1.__exit__(None, None, None)


@test
def a_service_on_two_nodes_gets_each_worker_message_once():
    with Redis() as r:
        n1, n2 = xnode(r, "n1"), xnode(r, "n2")
        w = Worker(r, "w1")
        try:
            wait_nodes(n1, 1)
            wait_nodes(n2, 1)
            a, b = Server(n1, "svc"), Server(n2, "svc")
            wait_for(lambda: len(wait_service(n1, "svc")["sessions"]) == 2, 3, what="svc on both nodes")
            time.sleep(0.3)
            for i in range(20):
                w.send(cmd="emit", event="job:n", target="svc", data=i)
            wait_for(lambda: len(a.events) + len(b.events) >= 20, 5, what="20 events")
            time.sleep(0.5)
            got = sorted(e["payload"] for e in a.events + b.events)
            check_eq(got, list(range(20)), "each message once across the two nodes")
        finally:
            w.close()
            n1.__exit__(None, None, None)
            n2.__exit__(None, None, None)


lbtest.main()
