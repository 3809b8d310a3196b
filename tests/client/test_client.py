"""liblexbus through the real daemon, via the demo service tests/client/lbdemo.c."""
import json
import os
import re
import signal
import subprocess
import time

import lbtest
from lbtest import BUILDDIR, Bus, check, check_eq, test

DEMO = os.path.join(BUILDDIR, "tests", "client", "lbdemo")


def demo(bus, mode):
    env = dict(os.environ, LEXBUS_URL="unix:" + bus.sock)
    return subprocess.Popen([DEMO, mode], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def line(p, timeout=10):
    import select
    r, _, _ = select.select([p.stdout], [], [], timeout)
    check(r, "no output from lbdemo within %ds (stderr: %s)" % (timeout, p.stderr.read1(4000) if False else ""))
    l = p.stdout.readline()
    check(l, "lbdemo ended without output")
    return json.loads(l)


@test
def nested_call_propagates_context():
    with Bus() as bus:
        p = demo(bus, "nested")
        out = line(p)
        p.wait(10)
        ctx = out["result"]
        check_eq(ctx["chain"], ["caller", "svc-front"], "chain lists the callers")
        check_eq(ctx["depth"], 2, "depth")
        check(ctx["root"].startswith("root-"), "root kept")
        check(ctx["deadline"] > time.time() * 1000, "deadline kept")


@test
def subscribe_emit_with_ack():
    with Bus() as bus:
        p = demo(bus, "events")
        check_eq(line(p), {"ack": 1}, "ack")
        ev = line(p)
        check_eq((ev["event"], ev["from"], ev["payload"]), ("a:b", "emitter", {"hello": "world"}), "event")
        check_eq(p.wait(10), 0, "exit")


@test
def json_text_payloads_both_ways():
    """lexbus_emit_json checks the text before sending; lexbus_on_raw hands
    over the payload exactly as the sender wrote it."""
    with Bus() as bus:
        p = demo(bus, "raw")
        check_eq(line(p), {"refused": 7, "of": 7}, "invalid JSON text refused locally")
        check_eq(line(p), {"error": "SERVICE_NOT_FOUND"}, "a refused fire-and-forget EMIT is reported")
        ev = line(p)
        check_eq((ev["event"], ev["from"]), ("a:b", "emitter"), "event")
        check_eq(ev["text"].strip(), '{"k": [1, 2.5e3, "\\u00e9"]}', "payload text untouched")
        check_eq(p.wait(10), 0, "exit")
        check_eq(bus.stats()["errors"]["INVALID_MESSAGE"], 0, "nothing invalid reached the bus")


def send_json_text(c, text):
    """A frame of JSON text as written (Python's json would rewrite 1e400)."""
    c.send_raw(lbtest.frame(text.encode()))


@test
def values_liblexbus_cannot_represent_are_reported_never_null():
    """Numbers beyond double or int64 range pass the bus (other clients read
    them) and liblexbus reports them instead of handing null to a handler; a
    "\u0000" escape reaches the handler whole; the bus refuses an unpaired
    surrogate escape like the same code point in raw UTF-8."""
    with Bus() as bus:
        t = bus.client("tester", methods=["give"])
        p = demo(bus, "values")
        check_eq(line(p), {"ready": True}, "registered")
        call = t.recv_type("CALL")
        check_eq((call["from"], call["method"]), ("decoder", "give"), "the demo calls tester.give")
        send_json_text(t, '{"type":"RESPONSE","id":"%s","status":"success","data":123456789012345678901234567890}'
                       % call["id"])
        out = line(p)
        check(out.get("error") == "INVALID_MESSAGE" and "cannot represent the result" in out["message"]
              and "too big integer" in out["message"], "a result it cannot represent is an error: %r" % out)
        for i, (params, why) in enumerate([('{"n":1e400}', "real number overflow"),
                                           ('{"n":123456789012345678901234567890}', "too big integer"),
                                           ('[1,-1e999]', "real number overflow")]):
            send_json_text(t, '{"type":"CALL","id":"k%d","to":"decoder","method":"take","params":%s}' % (i, params))
            r = t.recv_type("RESPONSE")
            check_eq((r["id"], r["status"], r["error"]["code"]), ("k%d" % i, "error", "INVALID_MESSAGE"),
                     "the caller is told: %r" % r)
            check("'decoder' cannot represent the params" in r["error"]["message"] and why in r["error"]["message"],
                  "and why: %r" % r["error"])
        # The handler saw none of those: the next line is this call's.
        send_json_text(t, '{"type":"CALL","id":"nul","to":"decoder","method":"take","params":{"s":"a\\u0000b"}}')
        check_eq(line(p), {"call": "take", "got": {"s": "a\x00b"}, "slen": 3}, "a NUL escape reaches the handler whole")
        check_eq(t.recv_type("RESPONSE")["data"], {"s": "a\x00b"}, "and comes back whole")
        send_json_text(t, '{"type":"EMIT","event":"v:big","payload":{"x":[1e400]}}')
        out = line(p)
        check(out.get("error") == "INVALID_MESSAGE" and "event 'v:big' from 'tester'" in out["message"]
              and "real number overflow" in out["message"], "an event it cannot represent goes to on_error: %r" % out)
        send_json_text(t, '{"type":"EMIT","event":"v:nul","payload":{"s":"\\u0000"}}')
        check_eq(line(p), {"event": "v:nul", "got": {"s": "\x00"}, "slen": 1}, "an event with a NUL escape")
        for payload in ('"\\ud800"', '"x\\udc00"', '{"s":"\\ud800\\u0041"}', '{"\\udbff":1}'):
            send_json_text(t, '{"type":"EMIT","id":"s","event":"v:sur","payload":%s}' % payload)
            m = t.recv_type("ERROR")
            check(m["error"]["code"] == "INVALID_MESSAGE" and "unpaired surrogate" in m["error"]["message"],
                  "the bus refuses %s: %r" % (payload, m))
        send_json_text(t, '{"type":"EMIT","event":"v:pair","payload":{"s":"\\ud83d\\ude00"}}')
        check_eq(line(p), {"event": "v:pair", "got": {"s": "\U0001F600"}, "slen": 4}, "a surrogate pair is a character")
        p.send_signal(signal.SIGTERM)
        check_eq(p.wait(10), 0, "demo exit")


def victim(bus):
    env = dict(os.environ, LEXBUS_URL="unix:" + bus.sock)
    return subprocess.Popen([DEMO, "victim"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


@test
def call_ids_cannot_be_guessed_from_the_pid():
    """Pids are public (lexbus services): with ids "c<pid>-<n>" another client
    could hold the victim's next ids in flight at the callee and have its own
    calls refused.  Ids are a random per-client prefix and a counter."""
    with Bus() as bus:
        sink = bus.client("sink", methods=["hold"])
        attacker = bus.client("attacker")
        ids = []
        for _ in range(2):
            v = victim(bus)
            pid = line(v)["pid"]
            listed = [x for x in attacker.call("lexbus", "services")["data"] if x["name"] == "victim"]
            check_eq(listed[0]["pid"], pid, "the victim's pid is public")
            squat = ["c%d-%d" % (pid, n) for n in range(1, 33)]
            for cid in squat:
                attacker.send({"type": "CALL", "id": cid, "to": "sink", "method": "hold"})
            check_eq(sorted(sink.recv_type("CALL")["id"] for _ in squat), sorted(squat), "the sink holds them all")
            v.stdin.write("go\n")
            v.stdin.flush()
            try:
                call = sink.recv_type("CALL")
            except lbtest.TestFailure:
                raise lbtest.TestFailure("the victim's call never reached the sink: %r" % line(v))
            check_eq(call["from"], "victim", "the victim's call arrives")
            sink.send({"type": "RESPONSE", "id": call["id"], "status": "success", "data": "ok"})
            check_eq(line(v), {"result": "ok"}, "the victim's call is not refused as already in flight")
            check_eq(v.wait(10), 0, "victim exit")
            check(re.fullmatch(r"c[A-Za-z0-9_-]{16}-[0-9]+", call["id"]), "id %r: a random prefix, a counter" % call["id"])
            for cid in squat:   # let the attacker's calls go
                sink.send({"type": "RESPONSE", "id": cid, "status": "success", "data": None})
            ids.append(call["id"])
        check(ids[0].rsplit("-", 1)[0] != ids[1].rsplit("-", 1)[0], "each client draws its own prefix: %r" % ids)


@test
def reconnects_reregisters_and_resubscribes_after_restart():
    bus = Bus()
    try:
        p = demo(bus, "reconnect")
        check_eq(line(p)["ready"], True, "registered")
        c = bus.client("tester")
        check_eq(c.call("phoenix", "ping")["data"], "pong", "served")
        bus.stop()
        st = line(p)
        check_eq((st["ready"], st["why"]), (False, "CONNECTION_LOST"), "lost")
        bus.start()
        check_eq(line(p, 15)["ready"], True, "registered again")
        c = bus.client("tester2")
        check_eq(c.call("phoenix", "ping")["data"], "pong", "methods re-registered")
        c.send({"type": "EMIT", "event": "r:x:y", "ack": True, "id": "e"})
        check_eq(c.recv_type("ACK")["delivered"], 1, "subscription restored")
        check_eq(line(p)["event"], "r:x:y", "event handled")
        p.send_signal(signal.SIGTERM)
        check_eq(p.wait(10), 0, "demo exit")
    finally:
        bus.__exit__(None, None, None)


@test
def pending_call_fails_connection_lost_when_bus_stops():
    bus = Bus()
    try:
        sink = bus.client("sink", methods=["hold"])
        p = demo(bus, "lost")
        check_eq(line(p), {"called": True}, "called")
        sink.recv()   # the call arrived and is held
        bus.stop()
        out = line(p)
        check(out.get("error") in ("CONNECTION_LOST", "SHUTTING_DOWN"), "ended with %r" % out)
        p.wait(10)
    finally:
        bus.__exit__(None, None, None)


@test
def disconnect_fails_pending_calls_not_connected():
    with Bus() as bus:
        bus.client("sink", methods=["hold"])
        p = demo(bus, "disconnect")
        check_eq(line(p), {"called": True}, "called")
        check_eq(line(p)["error"], "NOT_CONNECTED", "pending call failed by disconnect")
        p.wait(10)


lbtest.main()
