"""Bad input gets a clear error and never disturbs anyone else."""
import json
import resource
import socket
import struct

import lbtest
from lbtest import Bus, Closed, RawClient, check, check_eq, test


def alive(bus, who):
    """The daemon still routes a call between two other clients."""
    check_eq(who.call("lexbus", "ping")["status"], "success", "daemon still serving")


def error_code(m):
    return m["error"]["code"]


@test
def zero_length_frame_bad_frame_then_close():
    with Bus() as bus:
        other = bus.client("other")
        c = bus.raw()
        c.send_raw(struct.pack(">I", 0))
        msgs = c.expect_closed()
        check_eq(error_code(msgs[0]), "BAD_FRAME", "code")
        alive(bus, other)


@test
def frame_over_max_frame_payload_too_large_then_close():
    with Bus(bus="max_frame = 4K\n") as bus:
        other = bus.client("other")
        c = bus.client("big")
        c.send_raw(struct.pack(">I", 4097) + b"{")
        msgs = c.expect_closed()
        check_eq(error_code(msgs[0]), "PAYLOAD_TOO_LARGE", "code")
        c2 = bus.client("big2")
        body = json.dumps({"type": "EMIT", "event": "a", "payload": "x" * 3900}).encode()
        check(len(body) <= 4096, "fits")
        c2.send_raw(struct.pack(">I", len(body)) + body)
        c2.expect_nothing()
        c3 = bus.raw()
        c3.send_raw(struct.pack(">I", 0xFFFFFFFF))
        check_eq(error_code(c3.expect_closed()[0]), "PAYLOAD_TOO_LARGE", "4 GiB length")
        alive(bus, other)


@test
def frame_cut_off_by_disconnect():
    with Bus() as bus:
        other = bus.client("other")
        for cut in (b"\x00\x00", b"\x00\x00\x01\x00{\"type\":\"REG"):
            c = bus.raw()
            c.send_raw(cut)
            c.close()
        alive(bus, other)


@test
def not_json_and_not_object_and_bad_utf8():
    with Bus() as bus:
        c = bus.client("c")
        for body in (b"not json", b"{\"type\":", b"[1,2]", b"\"str\"", b"{\"type\":\"EMIT\"} trailing",
                     b"{\"type\":\"EMIT\",\"event\":\"\xff\xfe\"}", b"{\"a\":" * 100 + b"1" + b"}" * 100,
                     b"{\"type\":\"EMIT\",\"event\":\"a\",\"payload\":\"\x01\"}"):
            c.send(body)
            m = c.recv()
            check_eq((m["type"], error_code(m)), ("ERROR", "INVALID_MESSAGE"), "body %r" % body[:30])
        alive(bus, c)


@test
def missing_unknown_and_non_string_type():
    with Bus() as bus:
        c = bus.client("c")
        for obj in ({"id": "x"}, {"type": "NOPE"}, {"type": 5}, {"type": None}):
            c.send(obj)
            m = c.recv()
            check_eq(error_code(m), "INVALID_MESSAGE", "obj %r" % obj)
        c.send({"type": "EVENT", "event": "a"})
        check("sent by the bus" in c.recv()["error"]["message"], "bus-only type")


@test
def wrong_field_types():
    with Bus() as bus:
        bus.client("svc", methods=["m"])
        c = bus.client("c")
        cases = [
            {"type": "CALL", "id": 5, "to": "svc", "method": "m"},
            {"type": "CALL", "id": "a", "to": 5, "method": "m"},
            {"type": "CALL", "id": "a", "to": "svc", "method": ["m"]},
            {"type": "CALL", "id": "a", "to": "svc", "method": "m", "context": "x"},
            {"type": "CALL", "id": "a", "to": "svc", "method": "m", "context": {"depth": "deep"}},
            {"type": "EMIT", "event": 7},
            {"type": "EMIT", "event": "a", "ack": "yes"},
            {"type": "EMIT", "event": "a", "to": 3},
            {"type": "SUBSCRIBE", "events": "a"},
            {"type": "SUBSCRIBE", "events": [1]},
            {"type": "RESPONSE", "id": 1},
        ]
        for obj in cases:
            c.send(obj)
            m = c.recv()
            check_eq(error_code(m), "INVALID_MESSAGE", "obj %r" % obj)
        r = bus.raw()
        for obj in ({"type": "REGISTER", "serviceName": 5}, {"type": "REGISTER", "serviceName": "x", "methods": "m"},
                    {"type": "REGISTER", "serviceName": "x", "metadata": []},
                    {"type": "REGISTER", "serviceName": "x", "subscribe": ["a:>:b"]}):
            r.send(obj)
            check_eq(error_code(r.recv()), "INVALID_MESSAGE", "obj %r" % obj)
        alive(bus, c)


@test
def non_numeric_deadline():
    with Bus() as bus:
        bus.client("svc", methods=["m"])
        c = bus.client("c")
        r = c.call("svc", "m", context={"root": "r", "chain": [], "depth": 1, "deadline": "tomorrow"})
        check_eq(error_code(r), "INVALID_MESSAGE", "code")
        check("deadline" in r["error"]["message"], "message names the field")


@test
def messages_before_register():
    with Bus() as bus:
        c = bus.raw()
        for obj in ({"type": "CALL", "id": "c1", "to": "x", "method": "m"}, {"type": "EMIT", "event": "a"},
                    {"type": "SUBSCRIBE", "events": ["a"]}):
            c.send(obj)
            m = c.recv()
            check_eq(error_code(m), "NOT_REGISTERED", "obj %r" % obj)
        c.send({"type": "HEARTBEAT", "timestamp": 1})
        c.expect_nothing()
        check_eq(c.register("late")["type"], "REGISTER_ACK", "can still register")


@test
def from_must_be_the_sender():
    with Bus() as bus:
        bus.client("svc", methods=["m"])
        c = bus.client("honest")
        r = c.call("svc", "m", **{"from": "liar"})
        check_eq(error_code(r), "FORBIDDEN", "call")
        c.send({"type": "EMIT", "event": "a", "from": "liar"})
        check_eq(error_code(c.recv()), "FORBIDDEN", "emit")


@test
def empty_and_overlong_names():
    with Bus() as bus:
        bus.client("svc", methods=["m"])
        c = bus.client("c")
        for name in ("", "x" * 129, "has space", "bad\u00e9"):
            r = bus.raw()
            r.send({"type": "REGISTER", "serviceName": name})
            check_eq(error_code(r.recv()), "INVALID_MESSAGE", "service %r" % name)
            check_eq(error_code(c.call(name or "", "m")), "INVALID_MESSAGE", "call to %r" % name)
        for method in ("", "m" * 129):
            check_eq(error_code(c.call("svc", method)), "INVALID_MESSAGE", "method %r" % method)
        for ev in ("", "a" * 256, "a::b", ":a", "a:*", "a:>"):
            c.send({"type": "EMIT", "event": ev})
            check_eq(error_code(c.recv()), "INVALID_MESSAGE", "event %r" % ev)
        check_eq(c.register("c", methods=["m" * 128])["type"], "REGISTER_ACK", "128 is allowed")


@test
def duplicate_keys_refused():
    with Bus() as bus:
        bus.client("svc", methods=["m"])
        c = bus.client("c")
        c.send(b'{"type":"CALL","id":"d1","to":"svc","method":"m","from":"c","from":"svc"}')
        r = c.recv()
        check_eq((r["type"], r["id"], error_code(r)), ("RESPONSE", "d1", "INVALID_MESSAGE"), "duplicate from")


@test
def ten_thousand_connections_opened_and_dropped_at_once():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    n = min(10000, hard - 200)
    check(n >= 10000, "RLIMIT_NOFILE hard limit %d is too low for this test" % hard)
    with Bus(bus="log_level = info\n") as bus:
        other = bus.client("other")
        socks = []
        for i in range(n):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(10)      # a full listen backlog makes connect wait, not fail
            s.connect(bus.sock)
            s.setblocking(False)
            socks.append(s)
        for i, s in enumerate(socks):
            if i % 2 == 0:   # half of them say something first
                try:
                    s.send(lbtest.frame({"type": "REGISTER", "serviceName": "s%d" % i}))
                except OSError:
                    pass
        for s in socks:
            s.close()
        alive(bus, other)
        lbtest.wait_for(lambda: bus.stats()["connections"]["open"] <= 3, timeout=30, what="connections to be reaped")
        check(bus.stats()["connections"]["accepted"] >= n, "all accepted")


lbtest.main()
