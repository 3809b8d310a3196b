"""The redis plugin: three lexbusd nodes through one real redis-server act
as one bus (calls, errors, events, broadcasts, the cluster-wide service
list, prefer_local and spreading), and the registry follows what happens."""
import time

from redisutil import lbtest  # noqa: F401 (puts tests/integration on the path first)
from lbtest import test, check, check_eq, wait_for
from redisutil import Redis, Server, node, rstats, wait_nodes, wait_service


def three(redis, **kw):
    ns = [node(redis, "n%d" % i, **kw) for i in (1, 2, 3)]
    for b in ns:
        wait_nodes(b, 2)
    return ns


def stop_all(nodes):
    for b in nodes:
        b.__exit__(None, None, None)


@test
def three_nodes_are_one_bus():
    with Redis() as r:
        n1, n2, n3 = three(r)
        try:
            greeter = Server(n2, "greeter", tag="n2")
            wait_service(n1, "greeter", node="n2")
            wait_service(n3, "greeter", node="n2")
            a = n1.client("caller")
            # A call on n1 to a service only on n2, and its answer, id kept.
            rsp = a.call("greeter", "echo", {"x": 1})
            check_eq(rsp.get("status"), "success", "cross-node call %r" % rsp)
            check_eq(rsp["data"], {"echo": {"x": 1}, "by": "n2"}, "answer")
            check(rsp["id"].startswith("req-"), "the caller's id comes back: %r" % rsp["id"])
            # Errors: decided from the registry at once, or by the node that has it.
            check_eq(a.call("greeter", "nope")["error"]["code"], "METHOD_NOT_FOUND", "missing method")
            t0 = time.time()
            check_eq(a.call("nobody", "x")["error"]["code"], "SERVICE_NOT_FOUND", "missing service")
            check(time.time() - t0 < 0.5, "SERVICE_NOT_FOUND took %.3fs" % (time.time() - t0))
            # The cluster-wide view: n2's instance with its node, on every node.
            s = wait_service(n3, "greeter")
            check_eq([i["node"] for i in s["sessions"]], ["n2"], "greeter's instances seen from n3")
            check_eq(s["methods"], ["echo", "hang"], "greeter's methods seen from n3")
            # A registration on n3 is visible on n1 within 1 s.
            t0 = time.time()
            late = Server(n3, "late", tag="n3")
            wait_service(n1, "late", timeout=1.0)
            check(time.time() - t0 < 1.0, "registration took %.2fs to reach n1" % (time.time() - t0))
            check_eq(a.call("late", "echo", {})["data"]["by"], "n3", "call to the late service")
            # A service-addressed EMIT crosses too; ACK: 0 here, 1 remote.
            a.send({"type": "EMIT", "id": "e1", "event": "greet:me", "to": "greeter", "payload": {"n": 1}, "ack": True})
            ack = a.recv_type("ACK")
            check_eq((ack["delivered"], ack.get("remoteNodes")), (0, 1), "ACK of an EMIT to n2's service")
            wait_for(lambda: any(e["event"] == "greet:me" for e in greeter.events), 3, what="the event on n2")
            ev = [e for e in greeter.events if e["event"] == "greet:me"][0]
            check_eq((ev["from"], ev["payload"], ev["id"]), ("caller", {"n": 1}, "e1"), "event as n2 got it")
            greeter.close()
            late.close()
        finally:
            stop_all([n1, n2, n3])


@test
def broadcasts_reach_every_subscriber_once():
    with Redis() as r:
        n1, n2, n3 = three(r)
        try:
            subs = [b.client("sub-%d" % i, subscribe=["news:>"]) for i, b in enumerate((n1, n2, n3))]
            other = n2.client("other", subscribe=["sport:*"])
            for b in (n1, n2, n3):
                wait_for(lambda b=b: len(rstats(b)["peers"]) == 2 and all(x["patterns"] >= 1 for x in rstats(b)["peers"]), 3,
                         what="patterns of every node on %s" % b.conf)
            e = n1.client("emitter")
            for k in range(5):
                e.send({"type": "EMIT", "id": "b%d" % k, "event": "news:world:%d" % k, "payload": k, "ack": True})
                ack = e.recv_type("ACK")
                check_eq((ack["delivered"], ack.get("remoteNodes")), (1, 1), "ACK of broadcast %d" % k)
            for i, s in enumerate(subs):
                got = [s.recv_type("EVENT") for _ in range(5)]
                check_eq([g["payload"] for g in got], [0, 1, 2, 3, 4], "events on node %d" % (i + 1))
                check(all(g["from"] == "emitter" and "to" not in g for g in got), "event fields %r" % got)
                s.expect_nothing(0.3)
            other.expect_nothing(0.1)
            # Only what some node listens to goes out: n3's own subscribers only.
            pub0 = rstats(n3)["published"]
            local = n3.client("local-only", subscribe=["solo:*"])
            time.sleep(0.3)
            e3 = n3.client("emitter3")
            e3.send({"type": "EMIT", "id": "s1", "event": "solo:x", "payload": 1, "ack": True})
            ack = e3.recv_type("ACK")
            check_eq((ack["delivered"], ack.get("remoteNodes")), (1, None), "ACK of a broadcast only n3 wants")
            check_eq(local.recv_type("EVENT")["payload"], 1, "n3's subscriber")
            check(rstats(n3)["published"] - pub0 <= 4, "n3 published the broadcast nobody else wants")
        finally:
            stop_all([n1, n2, n3])


@test
def prefer_local_and_spread_across_nodes():
    with Redis() as r:
        n1, n2, n3 = three(r)
        try:
            here = Server(n1, "both", tag="n1")
            there = Server(n2, "both", tag="n2")
            s2 = Server(n2, "spread", tag="n2")
            s3 = Server(n3, "spread", tag="n3")
            wait_for(lambda: len(wait_service(n1, "spread")["sessions"]) == 2, 3, what="spread on n2 and n3")
            wait_for(lambda: len(wait_service(n1, "both")["sessions"]) == 2, 3, what="both here and on n2")
            a = n1.client("caller")
            by = [a.call("both", "echo")["data"]["by"] for _ in range(10)]
            check_eq(set(by), {"n1"}, "prefer_local: the local instance serves")
            by = [a.call("spread", "echo")["data"]["by"] for _ in range(10)]
            check_eq(set(by), {"n2", "n3"}, "calls to a remote service spread across its nodes")
            for s in (here, there, s2, s3):
                s.close()
        finally:
            stop_all([n1, n2, n3])


lbtest.main()
