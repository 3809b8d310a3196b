"""The policy plugins (tokens, ratelimit, audit) see a MessagePack client's
messages exactly as a JSON client's, and their refusals reach it in
MessagePack."""
import json
import os
import sys
import time

import lbtest
from lbtest import Bus, check, check_eq, test
from mputil import mp_client, mp_raw

sys.path.insert(0, os.path.join(lbtest.SRCDIR, "tests", "policy"))
from tokenutil import claims, mint, token_bus_conf  # noqa: E402


def token_bus():
    return token_bus_conf().start()


@test
def tokens_authenticate_and_refuse_msgpack_clients():
    with token_bus() as bus:
        admin = mp_raw(bus)
        ack = admin.register("admin", token=mint(claims("admin", admin=True)))
        check_eq((ack["type"], ack["auth"]), ("REGISTER_ACK", "token"), "REGISTER with a token")
        r = admin.call("lexbus", "token.issue", {"target": "spark", "operation": "notify", "ttl": 300, "source": "sender"})
        check_eq(r["status"], "success", "token.issue through MessagePack: %r" % r)
        t = r["data"]
        spark = mp_raw(bus)
        spark.register("spark", token=mint(claims("spark")))
        sender = mp_raw(bus)
        check_eq(sender.register("sender", token=mint(claims("sender")))["type"], "REGISTER_ACK", "sender")
        nobody = mp_raw(bus).register("nobody")
        check_eq((nobody["type"], nobody["error"]["code"]), ("ERROR", "UNAUTHENTICATED"), "no credentials, told in MessagePack")
        sender.send({"type": "CALL", "id": "c1", "to": "spark", "method": "notify", "token": t["token"]})
        m = spark.recv()
        check_eq((m["token"]["jti"], m["token"]["source"], m["token"]["target"]), (t["jti"], "sender", "spark"),
                 "the recipient gets the verified claims as a map")
        spark.send({"type": "RESPONSE", "id": "c1", "status": "success", "data": "ok"})
        check_eq(sender.recv()["data"], "ok", "answered")
        r = sender.call("spark", "other", token=t["token"])
        check_eq(r["error"]["code"], "FORBIDDEN", "operation mismatch refused")
        check("not spark/other" in r["error"]["message"], r["error"]["message"])


@test
def ratelimit_counts_msgpack_messages_and_answers_in_msgpack():
    with Bus(plugins="[plugin ratelimit]\nwindow = 1s\nmax = 5\n") as bus:
        c = mp_client(bus, "chatty")
        for i in range(5):
            c.send({"type": "EMIT", "id": "e%d" % i, "event": "tick", "ack": True})
            check_eq(c.recv()["type"], "ACK", "message %d within the limit" % i)
        c.send({"type": "EMIT", "id": "e5", "event": "tick", "ack": True})
        m = c.recv()
        check_eq((m["type"], m["id"], m["error"]["code"]), ("ERROR", "e5", "RATE_LIMITED"), "sixth refused")
        check(0 < m["error"]["retryAfterMs"] <= 1000, "retryAfterMs %r" % m["error"]["retryAfterMs"])
        r = c.call("lexbus", "ping")
        check_eq((r["type"], r["error"]["code"]), ("RESPONSE", "RATE_LIMITED"), "a CALL is answered as a call")


def audit_run(make_client):
    """The same operations from clients made by make_client; the audit
    records with what changes from run to run taken out."""
    bus = Bus(start=False)
    path = os.path.join(bus.dir, "audit.jsonl")
    bus.write_conf(open(bus.conf).read() + "[plugin audit]\nfile = %s\nchain = yes\npayloads = yes\n" % path)
    bus.start()
    with bus:
        a = make_client(bus, "svc-a", methods=["echo"])
        b = make_client(bus, "svc-b", subscribe=["news:*"])
        params = {"n": [1, -2, 2**63 - 1, 0.25], "s": "é\n", "m": {"k": None, "t": True}}
        b.send({"type": "CALL", "id": "c-ok", "from": "svc-b", "to": "svc-a", "method": "echo", "params": params,
                "context": {"root": "r1", "chain": ["svc-b"], "depth": 1, "deadline": int(time.time() * 1000) + 30000}})
        call = a.recv()
        a.send({"type": "RESPONSE", "id": "c-ok", "status": "success", "data": call["params"], "context": call["context"]})
        b.recv_type("RESPONSE")
        check_eq(b.call("ghost", "x")["error"]["code"], "SERVICE_NOT_FOUND", "missing service")
        a.send({"type": "EMIT", "id": "e1", "event": "news:today", "payload": params, "ack": True})
        a.recv_type("ACK")
        b.recv_type("EVENT")
        check_eq(bus.stop(), 0, "exit")
        recs = [json.loads(l) for l in open(path, "rb").read().split(b"\n") if l]
    for r in recs:
        for k in ("time", "prev", "durationUs", "bytes"):
            r.pop(k, None)
        if (r.get("id") or "").startswith("req-"):
            r["id"] = "req-*"
    return recs


@test
def audit_records_the_same_for_both_encodings():
    as_json = audit_run(lambda bus, name, **kw: bus.client(name, **kw))
    as_mp = audit_run(mp_client)
    check(len(as_json) >= 5, "records: %r" % as_json)
    check_eq(as_mp, as_json, "audit records")
    echo = [r for r in as_mp if r.get("name") == "echo"][0]
    check_eq(echo["data"]["n"], [1, -2, 2**63 - 1, 0.25], "the answer recorded as sent")
    today = [r for r in as_mp if r.get("name") == "news:today"][0]
    check_eq(today["payload"]["s"], "é\n", "the payload recorded as sent")


lbtest.main()
