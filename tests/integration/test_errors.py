"""Every call failure is answered by the bus with an error RESPONSE."""
import os
import signal
import time

import lbtest
from lbtest import Bus, check, check_eq, test


def now_ms():
    return int(time.time() * 1000)


@test
def service_and_method_not_found():
    with Bus() as bus:
        a = bus.client("svc-a", methods=["echo"])
        r = a.call("ghost", "x")
        check_eq((r["type"], r["status"], r["error"]["code"]), ("RESPONSE", "error", "SERVICE_NOT_FOUND"), "service")
        check("ghost" in r["error"]["message"], "message names the service")
        r = a.call("svc-a", "nope")
        check_eq(r["error"]["code"], "METHOD_NOT_FOUND", "method")


@test
def service_unavailable_when_instance_disconnects_mid_call():
    with Bus() as bus:
        a = bus.client("svc-a", methods=["slow"])
        b = bus.client("svc-b")
        b.send({"type": "CALL", "id": "c1", "to": "svc-a", "method": "slow"})
        a.recv()
        a.close()
        r = b.recv()
        check_eq((r["id"], r["error"]["code"]), ("c1", "SERVICE_UNAVAILABLE"), "unavailable")


@test
def timeout_from_call_timeout_and_late_response_counted():
    with Bus(call_timeout="300ms") as bus:
        a = bus.client("svc-a", methods=["slow"])
        b = bus.client("svc-b")
        t = time.time()
        b.send({"type": "CALL", "id": "c1", "to": "svc-a", "method": "slow"})
        a.recv()
        r = b.recv()
        check_eq(r["error"]["code"], "TIMEOUT", "timeout")
        check(0.25 < time.time() - t < 3, "answered at the timeout")
        late0 = b.call("lexbus", "stats")["data"]["calls"]["late"]
        a.send({"type": "RESPONSE", "id": "c1", "status": "success", "data": 1})
        b.expect_nothing()
        check_eq(b.call("lexbus", "stats")["data"]["calls"]["late"], late0 + 1, "late counted")


@test
def timeout_from_deadline():
    with Bus(call_timeout="30s") as bus:
        a = bus.client("svc-a", methods=["slow"])
        b = bus.client("svc-b")
        t = time.time()
        b.send({"type": "CALL", "id": "c1", "to": "svc-a", "method": "slow",
                "context": {"root": "r", "chain": ["svc-b"], "depth": 1, "deadline": now_ms() + 300}})
        a.recv()
        r = b.recv()
        check_eq(r["error"]["code"], "TIMEOUT", "deadline timeout")
        check(time.time() - t < 3, "deadline, not call_timeout")


@test
def deadline_already_passed():
    with Bus() as bus:
        bus.client("svc-a", methods=["x"])
        b = bus.client("svc-b")
        r = b.call("svc-a", "x", context={"root": "r", "chain": [], "depth": 1, "deadline": now_ms() - 1000})
        check_eq(r["error"]["code"], "DEADLINE_EXCEEDED", "deadline exceeded")


@test
def max_depth_default_and_configured():
    with Bus() as bus:
        a = bus.client("svc-a", methods=["x"])
        b = bus.client("svc-b")
        ctx = {"root": "r", "chain": [], "depth": 101, "deadline": now_ms() + 10000}
        check_eq(b.call("svc-a", "x", context=ctx)["error"]["code"], "MAX_DEPTH_EXCEEDED", "depth 101")
        ctx["depth"] = 100
        b.send({"type": "CALL", "id": "d100", "to": "svc-a", "method": "x", "context": ctx})
        check_eq(a.recv()["id"], "d100", "depth 100 routed")
    with Bus(bus="max_depth = 3\n") as bus:
        bus.client("svc-a", methods=["x"])
        b = bus.client("svc-b")
        ctx = {"root": "r", "chain": [], "depth": 4, "deadline": now_ms() + 10000}
        check_eq(b.call("svc-a", "x", context=ctx)["error"]["code"], "MAX_DEPTH_EXCEEDED", "configured")


@test
def duplicate_call_id_in_flight_refused():
    with Bus() as bus:
        a = bus.client("svc-a", methods=["x"])
        b = bus.client("svc-b")
        b.send({"type": "CALL", "id": "same", "to": "svc-a", "method": "x"})
        a.recv()
        b.send({"type": "CALL", "id": "same", "to": "svc-a", "method": "x"})
        r = b.recv()
        check_eq((r["id"], r["error"]["code"]), ("same", "INVALID_MESSAGE"), "duplicate id")


@test
def response_from_wrong_instance_is_not_accepted():
    with Bus() as bus:
        a = bus.client("svc-a", methods=["x"])
        mallory = bus.client("mallory")
        b = bus.client("svc-b")
        b.send({"type": "CALL", "id": "c1", "to": "svc-a", "method": "x"})
        a.recv()
        mallory.send({"type": "RESPONSE", "id": "c1", "status": "success", "data": "forged"})
        b.expect_nothing()
        a.send({"type": "RESPONSE", "id": "c1", "status": "success", "data": "real"})
        check_eq(b.recv()["data"], "real", "only the callee answers")


@test
def heartbeat_eviction_after_three_intervals():
    with Bus(heartbeat="200ms") as bus:
        quiet = bus.client("quiet")
        t = time.time()
        msgs = quiet.expect_closed(timeout=5)
        check(msgs and msgs[-1]["error"]["code"] == "TIMEOUT", "told why: %r" % msgs)
        check(time.time() - t >= 0.55, "not before 3 intervals")
        chatty = bus.client("chatty")
        for _ in range(8):
            chatty.send({"type": "HEARTBEAT", "from": "chatty", "timestamp": now_ms()})
            time.sleep(0.1)
        chatty.send({"type": "HEARTBEAT", "id": "still-here"})
        check_eq(chatty.recv_type("HEARTBEAT")["id"], "still-here", "heartbeats keep it alive")
        check(bus.stats()["connections"]["evicted"] >= 1, "evictions counted")


@test
def sigterm_answers_in_flight_calls_shutting_down_and_exits_0():
    with Bus() as bus:
        a = bus.client("svc-a", methods=["slow"])
        b = bus.client("svc-b")
        b.send({"type": "CALL", "id": "c1", "to": "svc-a", "method": "slow"})
        a.recv()
        bus.send_signal(signal.SIGTERM)
        r = b.recv()
        check_eq(r["error"]["code"], "SHUTTING_DOWN", "shutting down")
        check_eq(bus.proc.wait(10), 0, "exit status")
        check(not os.path.exists(bus.sock), "socket removed")


@test
def sighup_reload_changes_call_timeout_and_survives_a_broken_file():
    with Bus(call_timeout="30s") as bus:
        a = bus.client("svc-a", methods=["slow"])
        b = bus.client("svc-b")
        text = open(bus.conf).read().replace("call_timeout = 30s", "call_timeout = 200ms")
        bus.write_conf(text)
        bus.send_signal(signal.SIGHUP)
        lbtest.wait_for(lambda: "configuration reloaded" in bus.logtext(), what="reload")
        b.send({"type": "CALL", "id": "c1", "to": "svc-a", "method": "slow"})
        a.recv()
        check_eq(b.recv(3)["error"]["code"], "TIMEOUT", "new call_timeout in effect")
        bus.write_conf(text + "\n[bogus]\n")
        bus.send_signal(signal.SIGHUP)
        lbtest.wait_for(lambda: "reload failed, old configuration kept" in bus.logtext(), what="reload failure")
        check("unknown section [bogus]" in bus.logtext(), "cause logged")
        check_eq(b.call("lexbus", "ping")["status"], "success", "still serving")
        check_eq(b.call("lexbus", "reload")["error"]["code"], "EXECUTION_FAILED", "reload method reports failure")


lbtest.main()
