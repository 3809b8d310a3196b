"""Every message type through the real lexbusd, over real Unix sockets."""
import time

import lbtest
from lbtest import Bus, check, check_eq, test


@test
def register_ack_fields():
    with Bus() as bus:
        c = bus.raw()
        ack = c.register("svc-a", methods=["echo"])
        check_eq(ack["type"], "REGISTER_ACK", "type")
        check_eq(ack["node"], "test-node", "node")
        check_eq(ack["serviceName"], "svc-a", "serviceName")
        check_eq(ack["heartbeatInterval"], 30000, "heartbeatInterval")
        check(isinstance(ack["session"], int) and ack["session"] > 0, "session id")


@test
def call_response_roundtrip_with_context_added():
    with Bus() as bus:
        a = bus.client("svc-a", methods=["echo"])
        b = bus.client("svc-b")
        b.send({"type": "CALL", "id": "c1", "to": "svc-a", "method": "echo", "params": {"x": 1}})
        m = a.recv()
        check_eq(m["type"], "CALL", "type")
        check_eq(m["from"], "svc-b", "from filled in")
        check_eq(m["params"], {"x": 1}, "params")
        ctx = m["context"]
        check_eq(ctx["chain"], ["svc-b"], "chain")
        check_eq(ctx["depth"], 1, "depth")
        check(ctx["root"].startswith("root-"), "root id")
        check(ctx["deadline"] > time.time() * 1000, "deadline in the future")
        a.send({"type": "RESPONSE", "id": "c1", "status": "success", "data": {"y": 2}})
        r = b.recv()
        check_eq((r["type"], r["id"], r["status"], r["data"], r["from"]), ("RESPONSE", "c1", "success", {"y": 2}, "svc-a"),
                 "response")


@test
def context_forwarded_untouched():
    with Bus() as bus:
        a = bus.client("svc-a", methods=["echo"])
        b = bus.client("svc-b")
        ctx = {"root": "root-1-abc", "chain": ["svc-b", "svc-b"], "depth": 2, "deadline": int(time.time() * 1000) + 60000}
        b.send({"type": "CALL", "id": "c1", "from": "svc-b", "to": "svc-a", "method": "echo", "params": [], "context": ctx})
        m = a.recv()
        check_eq(m["context"], ctx, "context")
        a.send({"type": "RESPONSE", "id": "c1", "from": "svc-a", "to": "svc-b", "status": "error",
                "error": {"code": "EXECUTION_FAILED", "message": "boom"}, "context": ctx})
        r = b.recv()
        check_eq(r["error"]["code"], "EXECUTION_FAILED", "error forwarded")
        check_eq(r["context"], ctx, "context echoed")


@test
def round_robin_across_instances():
    with Bus() as bus:
        insts = [bus.client("worker", methods=["job"]) for _ in range(3)]
        caller = bus.client("boss")
        for i in range(6):
            caller.send({"type": "CALL", "id": "j%d" % i, "to": "worker", "method": "job"})
        counts = []
        for w in insts:
            got = 0
            while True:
                try:
                    m = w.recv(0.3)
                except lbtest.TestFailure:
                    break
                got += 1
                w.send({"type": "RESPONSE", "id": m["id"], "status": "success", "data": None})
            counts.append(got)
        check_eq(counts, [2, 2, 2], "calls per instance")
        for _ in range(6):
            check_eq(caller.recv()["status"], "success", "status")


@test
def method_restriction_and_any_method_instances():
    with Bus() as bus:
        strict = bus.client("svc", methods=["a"])
        loose = bus.client("svc")     # no methods: accepts every method
        caller = bus.client("caller")
        caller.send({"type": "CALL", "id": "x1", "to": "svc", "method": "b"})
        m = loose.recv()
        check_eq(m["method"], "b", "any-method instance got it")
        strict.expect_nothing()
        loose.send({"type": "RESPONSE", "id": "x1", "status": "success", "data": 1})
        check_eq(caller.recv()["data"], 1, "answered")


@test
def re_register_same_name_updates_methods_other_name_forbidden():
    with Bus() as bus:
        s = bus.client("svc", methods=["a"])
        caller = bus.client("caller")
        check_eq(caller.call("svc", "b")["error"]["code"], "METHOD_NOT_FOUND", "before")
        check_eq(s.register("svc", methods=["a", "b"])["type"], "REGISTER_ACK", "re-register")
        caller.send({"type": "CALL", "id": "q", "to": "svc", "method": "b"})
        check_eq(s.recv()["method"], "b", "new method routed")
        r = s.register("other")
        check_eq((r["type"], r["error"]["code"]), ("ERROR", "FORBIDDEN"), "rename refused")


@test
def broadcast_patterns_star_and_tail():
    with Bus() as bus:
        star = bus.client("star", subscribe=["post:*"])
        tail = bus.client("tail", subscribe=["content:>"])
        both = bus.client("both", subscribe=["post:*", "post:>"])
        pub = bus.client("pub")
        pub.send({"type": "EMIT", "event": "post:created", "payload": {"id": 7}, "ack": True})
        check_eq(star.recv()["payload"], {"id": 7}, "star got it")
        e = both.recv()
        check_eq((e["type"], e["event"], e["from"]), ("EVENT", "post:created", "pub"), "event")
        check("to" not in e and "id" not in e, "a broadcast carries no `to`, and no id its emitter did not give: %r" % e)
        both.expect_nothing()   # two matching patterns, one delivery
        tail.expect_nothing()
        check_eq(pub.recv()["delivered"], 2, "ack count")
        pub.send({"type": "EMIT", "event": "content:a:b", "payload": "x", "ack": True})
        check_eq(tail.recv()["event"], "content:a:b", "tail matched two segments")
        check_eq(pub.recv()["delivered"], 1, "ack")
        pub.send({"type": "EMIT", "event": "content", "ack": True, "id": "e9"})
        a = pub.recv()
        check_eq((a["type"], a["id"], a["delivered"]), ("ACK", "e9", 0), "'>' needs one more segment")
        star.expect_nothing()


@test
def subscribe_unsubscribe_with_ack():
    with Bus() as bus:
        s = bus.client("s")
        pub = bus.client("pub")
        s.send({"type": "SUBSCRIBE", "id": "s1", "events": ["a:b", "x:*"]})
        check_eq(s.recv(), {"type": "ACK", "id": "s1", "subscriptions": 2}, "subscribe ack")
        pub.send({"type": "EMIT", "event": "x:y", "payload": 1})
        check_eq(s.recv()["event"], "x:y", "delivered")
        s.send({"type": "UNSUBSCRIBE", "id": "u1", "events": ["x:*"]})
        check_eq(s.recv()["subscriptions"], 1, "unsubscribe ack")
        pub.send({"type": "EMIT", "event": "x:y", "payload": 1, "ack": True})
        check_eq(pub.recv()["delivered"], 0, "no longer delivered")
        s.expect_nothing()


@test
def service_targeted_emit_goes_to_one_instance():
    with Bus() as bus:
        i1 = bus.client("svc")
        i2 = bus.client("svc")
        pub = bus.client("pub")
        pub.send({"type": "EMIT", "event": "job:run", "to": "svc", "payload": 1, "ack": True})
        check_eq(pub.recv()["delivered"], 1, "one instance")
        got = 0
        for i in (i1, i2):
            try:
                check_eq(i.recv(0.3)["to"], "svc", "to")
                got += 1
            except lbtest.TestFailure:
                pass
        check_eq(got, 1, "exactly one instance got it")
        pub.send({"type": "EMIT", "id": "e1", "event": "job:run", "to": "nobody"})
        e = pub.recv()
        check_eq((e["type"], e["id"], e["error"]["code"]), ("ERROR", "e1", "SERVICE_NOT_FOUND"), "missing service")


@test
def heartbeat_with_id_answered_without_id_silent():
    """doc/protocol.md: only a HEARTBEAT with a string id is answered (a probe);
    Bro clients send theirs without one and expect nothing back."""
    with Bus() as bus:
        pre = bus.raw()
        pre.send({"type": "HEARTBEAT", "id": "before-register"})
        m = pre.recv()
        check_eq((m["type"], m["id"]), ("HEARTBEAT", "before-register"), "a probe before REGISTER is answered")
        c = bus.client("hb")
        c.send({"type": "HEARTBEAT", "from": "hb", "timestamp": 1})
        c.send({"type": "HEARTBEAT", "id": 7, "timestamp": 1})
        c.expect_nothing()
        c.send({"type": "HEARTBEAT", "id": "h1", "timestamp": 1})
        m = c.recv()
        check_eq((m["type"], m["id"], m["from"]), ("HEARTBEAT", "h1", "lexbus"), "heartbeat reply")
        check(isinstance(m["timestamp"], int) and abs(m["timestamp"] / 1000 - time.time()) < 60, "timestamp in ms")


@test
def system_service_services_stats_ping():
    with Bus() as bus:
        a = bus.client("svc-a", methods=["m1", "m2"])
        s = a.call("lexbus", "services")["data"]
        me = [x for x in s if x["name"] == "svc-a"][0]
        check_eq(me["instances"], 1, "instances")
        check_eq(sorted(me["methods"]), ["m1", "m2"], "methods")
        for k in ("node", "pid", "hostname", "registered", "lastSeen"):
            check(k in me, "services field %s" % k)
        check(any(x["name"] == "lexbus" for x in s), "the bus lists itself")
        st1 = a.call("lexbus", "stats")["data"]
        a.call("nobody", "x")
        st2 = a.call("lexbus", "stats")["data"]
        check_eq(st2["errors"]["SERVICE_NOT_FOUND"], st1["errors"]["SERVICE_NOT_FOUND"] + 1, "errors per code")
        check(st2["messagesIn"]["CALL"] >= st1["messagesIn"]["CALL"] + 2, "messages per type")
        for k in ("connections", "services", "calls", "bytesIn", "bytesOut", "uptime"):
            check(k in st2, "stats field %s" % k)
        check_eq(a.call("lexbus", "ping")["data"]["pong"], True, "ping")
        r = a.call("lexbus", "nope")
        check_eq(r["error"]["code"], "METHOD_NOT_FOUND", "unknown system method")


@test
def system_service_alias():
    with Bus(bus="system_service = exprsn-bridge\n") as bus:
        a = bus.client("svc")
        check_eq(a.call("exprsn-bridge", "ping")["status"], "success", "alias answers")
        check_eq(a.call("lexbus", "ping")["status"], "success", "lexbus still answers")


lbtest.main()
