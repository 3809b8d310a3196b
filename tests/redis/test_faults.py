"""The redis plugin's faults, each with real parts: a node killed with
SIGKILL, an instance gone mid-call, a clean stop, two nodes with one name,
Redis absent at start-up, restarted mid-traffic, blocked (DEBUG SLEEP,
CLIENT PAUSE), its pub/sub output-buffer limit disconnecting us, and
hostile messages on our channels (garbage, forged origins, 100 MiB)."""
import json
import os
import signal
import subprocess
import time

from redisutil import lbtest  # noqa: F401
from lbtest import test, check, check_eq, wait_for, TestFailure
from redisutil import Redis, Server, node, rstats, wait_nodes, wait_service


def pair(redis, **kw):
    a, b = node(redis, "n1", **kw), node(redis, "n2", **kw)
    wait_nodes(a, 1)
    wait_nodes(b, 1)
    return a, b


def close(*buses):
    for b in buses:
        b.__exit__(None, None, None)


def send_call(c, to, method, cid):
    c.send({"type": "CALL", "id": cid, "to": to, "method": method, "params": {}})


def response(c, cid, timeout):
    end = time.time() + timeout
    while True:
        m = c.recv(max(0.05, end - time.time()))
        if m.get("type") == "RESPONSE" and m.get("id") == cid:
            return m


@test
def node_killed_with_sigkill():
    with Redis() as r:
        n1, n2 = pair(r)
        try:
            slow = Server(n2, "slow")
            wait_service(n1, "slow")
            c = n1.client("caller")
            send_call(c, "slow", "hang", "k1")
            wait_for(lambda: slow.calls, 3, what="the call on n2")
            t0 = time.time()
            n2.proc.kill()                     # SIGKILL: no goodbye
            rsp = response(c, "k1", 5)
            took = time.time() - t0
            check_eq(rsp["error"]["code"], "SERVICE_UNAVAILABLE", "call in flight to a killed node %r" % rsp)
            check(took < 1.5 + 1.0, "the caller heard after %.2fs (node_ttl 1.5 s)" % took)
            t0 = time.time()
            check_eq(c.call("slow", "echo")["error"]["code"], "SERVICE_NOT_FOUND", "a call after the node died")
            check(time.time() - t0 < 0.5, "fail fast")
            check_eq(rstats(n1)["nodes"], 0, "n1 forgot n2")
        finally:
            close(n1, n2)


@test
def instance_gone_mid_call_and_clean_stop():
    with Redis() as r:
        n1, n2 = pair(r)
        try:
            slow = Server(n2, "slow")
            wait_service(n1, "slow")
            c = n1.client("caller")
            send_call(c, "slow", "hang", "g1")
            wait_for(lambda: slow.calls, 3, what="the call on n2")
            slow.close()                       # the instance on n2 goes away
            rsp = response(c, "g1", 3)
            check_eq(rsp["error"]["code"], "SERVICE_UNAVAILABLE", "instance gone mid-call %r" % rsp)
            # A clean stop says goodbye: the others forget it at once.
            Server(n2, "other")
            wait_service(n1, "other")
            t0 = time.time()
            check_eq(n2.stop(), 0, "n2's exit code")
            wait_for(lambda: rstats(n1)["nodes"] == 0, 1.0, what="n1 to forget n2")
            check(time.time() - t0 < 1.0, "took %.2fs" % (time.time() - t0))
            check_eq(c.call("other", "echo")["error"]["code"], "SERVICE_NOT_FOUND", "n2's service is gone")
        finally:
            close(n1, n2)


@test
def two_nodes_with_one_name():
    with Redis() as r:
        first = node(r, "twin")
        wait_for(lambda: rstats(first)["state"] == "up", 5, what="the first twin up")
        second = node(r, "twin")
        other = node(r, "n3")
        try:
            wait_for(lambda: rstats(second)["state"] == "name-clash", 5, what="the second twin refused")
            check("node name 'twin' is in use by another running lexbusd" in second.logtext(), "the clash is explained")
            Server(second, "from-second")
            wait_nodes(other, 1)
            time.sleep(0.5)
            check_eq([p["node"] for p in rstats(other)["peers"]], ["twin"], "n3 sees one twin")
            check_eq(other.client("c").call("from-second", "echo")["error"]["code"], "SERVICE_NOT_FOUND",
                     "the refused twin's services are not in the cluster")
            second.client("local").call("from-second", "echo")   # it still serves locally
            # The first goes away: the second may take the name.
            first.stop()
            wait_for(lambda: rstats(second)["state"] == "up", 6, what="the second twin to join")
            wait_service(other, "from-second", timeout=3)
        finally:
            close(first, second, other)


@test
def redis_absent_at_startup():
    r = Redis(start=False)
    try:
        n1 = node(r, "n1", redis_conf="backoff_max = 500ms")
        try:
            # Started, serves locally, says it retries.
            Server(n1, "local")
            check_eq(n1.client("c").call("local", "echo")["status"], "success", "local routing without Redis")
            wait_for(lambda: "retrying with jittered backoff" in n1.logtext(), 3, what="the retry message")
            check_eq(rstats(n1)["state"] in ("down", "connecting"), True, "state while Redis is absent")
            r.start()
            wait_for(lambda: rstats(n1)["state"] == "up", 5, what="n1 to join once Redis is there")
            n2 = node(r, "n2")
            try:
                wait_nodes(n1, 1)
                check_eq(n2.client("c").call("local", "echo")["data"]["by"], "local", "n2 calls n1's service")
            finally:
                close(n2)
        finally:
            close(n1)
    finally:
        r.close()


@test
def redis_restarted_mid_traffic():
    with Redis() as r:
        n1, n2 = pair(r)
        try:
            slow = Server(n2, "slow")
            wait_service(n1, "slow")
            c = n1.client("caller")
            send_call(c, "slow", "hang", "r1")
            wait_for(lambda: slow.calls, 3, what="the call on n2")
            r.kill()
            rsp = response(c, "r1", 3)
            check_eq(rsp["error"]["code"], "SERVICE_UNAVAILABLE", "a call in flight when Redis died %r" % rsp)
            # While Redis is away: cross-node EMITs with ack get an error, local traffic flows.
            c.send({"type": "EMIT", "id": "x1", "event": "a:b", "to": "slow", "ack": True})
            m = c.recv()
            check_eq((m["type"], m["error"]["code"]), ("ERROR", "SERVICE_NOT_FOUND"), "an EMIT with ack to n2 %r" % m)
            Server(n1, "here")
            check_eq(c.call("here", "echo")["status"], "success", "local call while Redis is down")
            r.start()
            wait_nodes(n1, 1, timeout=8)
            wait_nodes(n2, 1, timeout=8)
            wait_service(n1, "slow", timeout=3)
            check_eq(c.call("slow", "echo")["data"]["by"], "slow", "calls cross again")
            s = rstats(n1)
            check(s["reconnects"] >= 1, "reconnects counted: %r" % s)
            check("lost the" in n1.logtext() or "Redis closed" in n1.logtext(), "the loss is logged")
        finally:
            close(n1, n2)


@test
def redis_blocked_never_stalls_the_bus():
    with Redis() as r:
        n1, n2 = pair(r)
        try:
            Server(n2, "far")
            Server(n1, "near")
            wait_service(n1, "far")
            far, near = n1.client("far-caller"), n1.client("near-caller")
            for block in (["DEBUG", "SLEEP", "1.5"], ["CLIENT", "PAUSE", "1500", "ALL"]):
                blocker = subprocess.Popen(["redis-cli", "-s", r.sock] + block, stdout=subprocess.DEVNULL)
                time.sleep(0.3)
                t_far = time.time()
                send_call(far, "far", "echo", "b-" + block[0])
                t0 = time.time()
                for _ in range(5):
                    check_eq(near.call("near", "echo")["status"], "success", "local call while Redis is blocked")
                check(time.time() - t0 < 0.5, "local calls took %.2fs while Redis was blocked" % (time.time() - t0))
                rsp = response(far, "b-" + block[0], 5)
                waited = time.time() - t_far
                check_eq(rsp["status"], "success", "the cross-node call sent while blocked (%s) %r" % (block[0], rsp))
                check(waited > 0.5, "the cross-node call did not wait for Redis (%.2fs): the block did not happen" % waited)
                blocker.wait(5)
            check_eq(rstats(n1)["state"], "up", "still up")
            check_eq(rstats(n1)["nodes"], 1, "n2 is still known: silence while Redis was blocked is not a death")
        finally:
            close(n1, n2)


@test
def the_queue_for_a_blocked_redis_is_bounded():
    with Redis() as r:
        n1, n2 = pair(r, redis_conf="max_queue = 64K\ncommand_timeout = 10s")
        try:
            far = Server(n2, "far")
            wait_service(n1, "far")
            c = n1.client("caller")
            blocker = subprocess.Popen(["redis-cli", "-s", r.sock, "DEBUG", "SLEEP", "1.5"], stdout=subprocess.DEVNULL)
            time.sleep(0.3)
            big = "z" * 4096
            for i in range(100):                # 400 KiB for a queue of 64 KiB
                c.send({"type": "EMIT", "event": "bulk:x", "to": "far", "payload": big})
            t0 = time.time()
            rsp = c.call("far", "echo", {"blob": "y" * (100 * 1024)})     # can never fit 64 KiB
            check_eq(rsp.get("error", {}).get("code"), "SERVICE_UNAVAILABLE", "a call that does not fit the queue %r"
                     % rsp)
            check("max_queue" in rsp["error"]["message"] and time.time() - t0 < 0.5, "answered at once: %r" % rsp)
            blocker.wait(5)
            s = rstats(n1)
            check(s["dropped_queue"] >= 10, "what did not fit is counted: %r" % s)
            check(s["queue_bytes"] <= 64 * 1024 + 8192, "the queue stayed bounded: %r" % s)
            wait_for(lambda: len(far.events) > 0, 3, what="what fitted, delivered after the block")
            check(len(far.events) < 100, "not everything was kept: %d" % len(far.events))
            check_eq(c.call("far", "echo")["status"], "success", "calls cross again")
        finally:
            close(n1, n2)


@test
def output_buffer_limit_disconnect_is_recovered():
    with Redis() as r:
        n1, n2 = pair(r)
        try:
            Server(n2, "far")
            wait_service(n1, "far")
            r.cli("CONFIG", "SET", "client-output-buffer-limit", "pubsub 128kb 64kb 1")
            before = rstats(n1)["reconnects"]
            # A burst on the broadcast channel while n1 reads nothing (stopped):
            # Redis must pass the limit on n1's subscriber connection however
            # fast n1 would otherwise have read (it did not always, loaded).
            body = "x" * 65536
            cmds = "".join("*3\r\n$7\r\nPUBLISH\r\n$8\r\nlexbus:b\r\n$%d\r\n%s\r\n" % (len(body), body) for _ in range(300))
            n1.send_signal(signal.SIGSTOP)
            try:
                subprocess.run(["redis-cli", "-s", r.sock, "--pipe"], input=cmds.encode(), capture_output=True, timeout=30)
            finally:
                n1.send_signal(signal.SIGCONT)
            wait_for(lambda: "pub/sub output buffer limit" in n1.logtext(), 5, what="n1 to see Redis drop it")
            wait_for(lambda: rstats(n1)["reconnects"] > before and rstats(n1)["state"] == "up", 8,
                     what="n1 to reconnect")
            r.cli("CONFIG", "SET", "client-output-buffer-limit", "pubsub 32mb 8mb 60")
            wait_nodes(n1, 1, timeout=8)
            wait_nodes(n2, 1, timeout=8)
            wait_service(n1, "far", timeout=3)
            check_eq(n1.client("c").call("far", "echo")["status"], "success", "calls cross after the recovery")
        finally:
            close(n1, n2)


def epoch_of(r, name):
    return json.loads(r.cli("GET", "lexbus:node:" + name))["epoch"]


@test
def hostile_messages_are_dropped_and_counted():
    with Redis() as r:
        n1, n2 = pair(r)
        try:
            Server(n2, "far")
            wait_service(n1, "far")
            e2 = epoch_of(r, "n2")
            emit = json.dumps({"type": "EMIT", "id": "z", "event": "a:b", "from": "evil", "to": "broadcast", "payload": 1})
            bad = [
                ("lexbus:n:n1", "garbage"),
                ("lexbus:n:n1", b"\xff\xfe\x00binary"),
                ("lexbus:b", "LB1 B nobody 0123456789abcdef\n" + emit),            # no such node
                ("lexbus:b", "LB1 B n2 0123456789abcdef\n" + emit),                # n2, another epoch: forged
                ("lexbus:b", "LB1 B n2 %s\n{not json" % e2),
                ("lexbus:b", "LB1 B n2 %s\n%s" % (e2, json.dumps({"type": "REGISTER", "serviceName": "x"}))),
                ("lexbus:n:n1", "LB1 C n2 %s\n%s" % (e2, json.dumps({"type": "CALL", "id": "n3~1", "to": "far",
                                                                      "method": "echo", "from": "x"}))),
                ("lexbus:n:n1", "LB1 C n2 %s\n%s" % (e2, json.dumps({"type": "CALL", "id": "n2~1", "to": 5}))),
                ("lexbus:c", "LB1 U n2 %s 9\n{\"node\":\"n2\",\"epoch\":5}" % e2),
                ("lexbus:c", "LB1 X n2 %s\n" % e2),
                ("lexbus:n:n1", "LB1 C " + "a" * 300 + " 0123456789abcdef\n{}"),
                ("lexbus:b", "LB1 B n2 %s 1 2 3 4 5\n%s" % (e2, emit)),
            ]
            for ch, body in bad:
                r.publish(ch, body)
            r.publish("lexbus:n:n1", b"x" * (5 << 20))                         # past max_message (4M)
            time.sleep(0.5)
            s = rstats(n1)
            check(s["dropped_bad"] >= 8, "malformed messages counted: %r" % s)
            check(s["dropped_origin"] >= 2, "forged origins counted: %r" % s)
            check(s["dropped_oversized"] >= 1, "the 5 MiB message counted: %r" % s)
            check_eq(n1.client("c").call("far", "echo")["status"], "success", "n1 still serves across nodes")
            # 100 MiB: first with Redis's own pub/sub limit (it cuts us off),
            # then without one (our max_message guard stops reading it).
            huge = b"LB1 B n2 " + e2.encode() + b"\n" + b"y" * (100 << 20)
            for limit in ("pubsub 32mb 8mb 60", "pubsub 0 0 0"):
                r.cli("CONFIG", "SET", "client-output-buffer-limit", limit)
                before = rstats(n1)["reconnects"]
                r.publish("lexbus:b", huge)
                wait_for(lambda: rstats(n1)["reconnects"] > before and rstats(n1)["state"] == "up", 15,
                         what="n1 back after a 100 MiB message (%s)" % limit)
            check("max_message" in n1.logtext(), "the guard says why it cut the connection")
            r.cli("CONFIG", "SET", "client-output-buffer-limit", "pubsub 32mb 8mb 60")
            wait_nodes(n1, 1, timeout=8)
            wait_nodes(n2, 1, timeout=8)
            wait_service(n1, "far", timeout=3)
            check_eq(n1.client("c").call("far", "echo")["status"], "success", "calls cross after all of it")
        finally:
            close(n1, n2)


lbtest.main()
