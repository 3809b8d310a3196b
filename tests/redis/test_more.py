"""The redis plugin's other duties: the host's state on Redis (a token
revoked on one node is refused on every node, and by a node that starts
later), raw channel bridging (IntelliRouter's intellirouter:<src>:<dst>:
<event> channels, published with redis-cli), the counters in `lexbus
stats`, and `lexbusd -t` checking every key."""
import json
import os
import subprocess
import tempfile
import time

from redisutil import lbtest  # noqa: F401
from lbtest import test, check, check_eq, wait_for, LEXBUSD
from redisutil import KEY, Redis, Resp, Server, node, rstats, wait_nodes, wait_service


def tokens_section():
    d = tempfile.mkdtemp(prefix="lexbus-key-")
    k = os.path.join(d, "broker.key")
    with open(k, "w") as f:
        f.write("main:%s\n" % KEY)
    os.chmod(k, 0o600)
    return "[plugin tokens]\nkey_file = %s\npeercred_uids = self\n" % k


@test
def revocations_hold_on_every_node():
    with Redis() as r:
        tok = tokens_section()
        nodes = [node(r, "n%d" % i, redis_conf="state = redis", plugins_after=tok) for i in (1, 2, 3)]
        late = None
        try:
            for b in nodes:
                wait_nodes(b, 2)
            a1, a2, a3 = (b.client("admin") for b in nodes)
            t = a1.call("lexbus", "token.issue", {"target": "svc", "operation": "*", "ttl": 600})["data"]
            for a in (a2, a3):
                check_eq(a.call("lexbus", "token.verify", {"token": t["token"]}).get("status"), "success",
                         "the token verifies everywhere first")
            rsp = a1.call("lexbus", "token.revoke", {"jti": t["jti"]})
            t0 = time.time()
            check_eq(rsp["data"]["revoked"], True, "revoked on n1")
            # Right after the answer, on the other nodes: as soon as Redis
            # hands them the change (it left for Redis before the answer).
            for a in (a2, a3):
                v = wait_for(lambda a=a: a.call("lexbus", "token.verify", {"token": t["token"]}).get("error"), 0.5,
                             step=0.001, what="the revocation on another node")
                check_eq(v["code"], "UNAUTHENTICATED", "refused on another node: %r" % v)
                check("revoked" in v["message"], "because it is revoked: %r" % v)
            print("# the revocation reached the other nodes within %.1f ms" % ((time.time() - t0) * 1000))
            check(r.cli("EXISTS", "lexbus:state:tokens:revoked/" + t["jti"]).strip() == "1", "the revocation is in Redis")
            check(rstats(nodes[1])["state_in"] >= 1, "n2 applied it: %r" % rstats(nodes[1]))
            # Token state too, and a node that starts later reads it all from Redis.
            a2.call("lexbus", "token.state.set", {"jti": "job-1", "state": {"step": 2}})
            late = node(r, "n4", redis_conf="state = redis", plugins_after=tok)
            wait_nodes(late, 3)
            a4 = late.client("admin")
            wait_for(lambda: a4.call("lexbus", "token.verify", {"token": t["token"]}).get("error"), 3,
                     what="the revocation on the late node")
            got = wait_for(lambda: a4.call("lexbus", "token.state.get", {"jti": "job-1"})["data"]["state"], 3,
                           what="the token state on the late node")
            check_eq(got, {"step": 2}, "token state from Redis")
        finally:
            for b in nodes + ([late] if late else []):
                b.__exit__(None, None, None)


@test
def raw_channels_are_bridged_both_ways():
    with Redis() as r:
        bridge = "bridge = intellirouter:*:*:*\nbridge = legacy:>"
        n1 = node(r, "n1", redis_conf=bridge)
        n2 = node(r, "n2", redis_conf=bridge)
        try:
            wait_nodes(n1, 1)
            wait_nodes(n2, 1)
            l1 = n1.client("l1", subscribe=["intellirouter:>", "legacy:>"])
            l2 = n2.client("l2", subscribe=["intellirouter:>"])
            time.sleep(0.3)
            body = {"execution_id": "exec-1", "output": "done", "total_tokens": 100, "timestamp": "2025-05-24T12:00:00Z",
                    "metadata": {}}
            ch = "intellirouter:chain_engine:router_core:chain_execution_completed"
            check_eq(r.publish(ch, json.dumps(body)), 2, "both nodes PSUBSCRIBEd")
            for l in (l1, l2):
                ev = l.recv_type("EVENT")
                check_eq((ev["event"], ev["payload"], ev["from"], ev.get("to")), (ch, body, "redis", None), "bridged (a broadcast: no \"to\")")
                l.expect_nothing(0.2)
            # Not JSON, or a channel that is no event name: dropped, counted.
            bad = rstats(n1)["dropped_bad"]
            r.publish("intellirouter:a:b:c", "{not json")
            r.publish("intellirouter:a b:c:d", "{}")
            wait_for(lambda: rstats(n1)["dropped_bad"] >= bad + 2, 3, what="the bad bridged messages counted")
            l1.expect_nothing(0.2)
            # lexbus -> Redis: an EMIT matching a bridge is PUBLISHed as its plain JSON.
            sub = Resp(r.sock)
            sub.send("SUBSCRIBE", "intellirouter:router_core:model_registry:model_usage")
            sub.read()
            e = n1.client("emitter")
            e.send({"type": "EMIT", "event": "intellirouter:router_core:model_registry:model_usage",
                    "payload": {"model_id": "m1", "latency_ms": 12}})
            msg = sub.read(5)
            check_eq((msg[0], json.loads(msg[2])), (b"message", {"model_id": "m1", "latency_ms": 12}), "published raw")
            # ...and other nodes hear it through the bridged channel, once; the emitter's node does not twice.
            ev = l2.recv_type("EVENT")
            check_eq((ev["payload"], ev["from"]), ({"model_id": "m1", "latency_ms": 12}, "redis"), "n2 got it once")
            l2.expect_nothing(0.3)
            ev = l1.recv_type("EVENT")
            check_eq(ev["from"], "emitter", "n1's own subscriber got it from the emitter")
            l1.expect_nothing(0.3)
            check(rstats(n1)["bridged_out"] >= 1 and rstats(n2)["bridged_in"] >= 2, "counted")
            sub.close()
        finally:
            n1.__exit__(None, None, None)
            n2.__exit__(None, None, None)


@test
def stats_show_the_plugin():
    with Redis() as r:
        n1, n2 = node(r, "n1"), node(r, "n2")
        try:
            wait_nodes(n1, 1)
            Server(n2, "far")
            wait_service(n1, "far")
            n1.client("c").call("far", "echo")
            time.sleep(0.7)                     # a heartbeat measures the latency
            s = rstats(n1)
            for k in ("published", "received", "dropped", "reconnects", "redis_latency_us", "nodes",
                      "remote_services", "calls_out", "queue_bytes"):
                check(k in s, "stats has %s: %r" % (k, s))
            check(s["published"] >= 1 and s["received"] >= 1 and s["calls_out"] == 1, "counts %r" % s)
            check(0 < s["redis_latency_us"] < 1000000, "latency %r" % s["redis_latency_us"])
            check_eq((s["state"], s["node"], s["url"]), ("up", "n1", r.url), "state, node, url")
            out = n1.cli("stats").stdout
            check("redis_latency_us" in out, "lexbus stats shows the counters")
        finally:
            n1.__exit__(None, None, None)
            n2.__exit__(None, None, None)


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@test
def tcp_host_names_and_passwords():
    port = free_port()
    r = Redis(args=["--port", str(port), "--bind", "127.0.0.1"], password="s3cret%word")
    try:
        n1 = node(r, "n1", url="redis://:s3cret%%25word@localhost:%d/3" % port)   # a name, TCP, AUTH, SELECT
        n2 = node(r, "n2", url="redis://default:s3cret%%25word@127.0.0.1:%d/3" % port)
        bad = node(r, "n3", url="redis://:wrong@127.0.0.1:%d" % port)
        try:
            wait_nodes(n1, 1)
            wait_nodes(n2, 1)
            Server(n2, "far")
            wait_service(n1, "far")
            check_eq(n1.client("c").call("far", "echo")["status"], "success", "a call over TCP with AUTH")
            check(r.cli("-n", "3", "EXISTS", "lexbus:node:n1").strip() == "1",
                  "the node's key is in database 3")
            wait_for(lambda: "refused" in bad.logtext() and "AUTH" in bad.logtext(), 5, what="the bad password said")
            check(rstats(bad)["state"] != "up", "the node with a bad password stays out")
            check("s3cret" not in n1.logtext() and "s3cret" not in str(rstats(n1)), "the password is never shown")
        finally:
            for b in (n1, n2, bad):
                b.__exit__(None, None, None)
    finally:
        r.close()


def check_config(text):
    d = tempfile.mkdtemp(prefix="lexbus-conf-")
    path = os.path.join(d, "bus.conf")
    with open(path, "w") as f:
        f.write("[bus]\nnode = n1\n" + text)
    r = subprocess.run([LEXBUSD, "-t", "-c", path], capture_output=True, text=True, timeout=30)
    return r.returncode, r.stdout + r.stderr


@test
def lexbusd_t_checks_every_key():
    rc, out = check_config("[plugin redis]\nurl = unix:///nowhere/redis.sock\nprefix = app\nnode_ttl = 3s\n"
                           "bridge = intellirouter:*:*:*\nstate = redis\nprefer_local = no\nmax_queue = 1M\n")
    check_eq(rc, 0, "a good section: %s" % out)
    check("redis" not in out or "error" not in out, "no complaint: %s" % out)
    bad = {
        "url = http://x": "url",
        "url = redis://host:99999": "port",
        "url = redis://:@host": "password",
        "url = unix://relative.sock": "absolute",
        "prefix = a:b": "prefix",
        "node_ttl = 10ms": "node_ttl",
        "backoff_min = 5s\nbackoff_max = 1s": "backoff_min",
        "max_message = 1K": "max_message",
        "state = file": "state",
        "bridge = intellirouter:**": "bridge",
        "exprsn = yes": "key_file",
        "exprsn_bridge = a b:c": "exprsn_bridge",
        "nonsense = 1": "unknown key",
        "connect_timeout = soon": "connect_timeout",
    }
    for line, want in bad.items():
        rc, out = check_config("[plugin redis]\n%s\n" % line)
        check(rc != 0 and want in out and "bus.conf:" in out, "%r: rc %d, %s" % (line, rc, out))
    rc, out = check_config("[plugin redis]\nexprsn = yes\nkey_file = /dev/null\n")
    check(rc != 0 and "[plugin tokens]" in out, "exprsn needs the tokens plugin: %s" % out)
    # The default configuration needs no Redis.
    src = os.environ.get("LEXBUS_SRCDIR", os.path.join(os.path.dirname(__file__), "..", ".."))
    r = subprocess.run([LEXBUSD, "-t", "-c", os.path.join(src, "bus.conf.example")], capture_output=True, text=True,
                       timeout=30)
    check_eq(r.returncode, 0, "bus.conf.example checks: %s" % (r.stdout + r.stderr))
    check("[plugin redis]" not in open(os.path.join(src, "bus.conf.example")).read().split("\n#")[0],
          "bus.conf.example does not enable redis")


lbtest.main()
