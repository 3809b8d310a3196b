"""liblexbus through the real daemon, via the demo service tests/client/lbdemo.c."""
import json
import os
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
