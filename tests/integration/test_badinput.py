"""Bad input gets a clear error and never disturbs anyone else."""
import json
import os
import resource
import socket
import struct
import time

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
def escaped_member_names_refused():
    """"fr\u006fm" is `from` to a recipient's parser but not to a scanner that
    compares raw names: such frames are refused, not forwarded."""
    with Bus() as bus:
        svc = bus.client("svc", methods=["m"], subscribe=["ev"])
        c = bus.client("c")
        c.send(b'{"type":"CALL","id":"e1","to":"svc","method":"m","fr\\u006fm":"admin"}')
        r = c.recv()
        check_eq((r["type"], r["id"], error_code(r)), ("RESPONSE", "e1", "INVALID_MESSAGE"), "escaped name in a CALL")
        check("escapes" in r["error"]["message"], r["error"]["message"])
        c.send(b'{"type":"EMIT","event":"ev","payload":1,"\\u0066rom":"admin"}')
        check_eq(error_code(c.recv()), "INVALID_MESSAGE", "escaped name in an EMIT")
        # Escapes inside payloads are fine.
        c.send(b'{"type":"EMIT","event":"ev","payload":{"fr\\u006fm":"x"}}')
        ev = svc.recv_type("EVENT")
        check_eq((ev["from"], ev["payload"]), ("c", {"from": "x"}), "nested escaped names pass untouched")
        alive(bus, c)


@test
def reserved_name_and_subscription_cap_on_re_register():
    with Bus() as bus:
        r = bus.raw()
        r.send({"type": "REGISTER", "serviceName": "broadcast"})
        check_eq(error_code(r.recv()), "FORBIDDEN", "broadcast is reserved")
        c = bus.raw()
        pats = ["p%d:*" % i for i in range(1000)]
        check_eq(c.register("subs", subscribe=pats)["type"], "REGISTER_ACK", "1000 patterns")
        c.send({"type": "REGISTER", "serviceName": "subs", "subscribe": ["q%d" % i for i in range(100)]})
        check_eq(error_code(c.recv()), "INVALID_MESSAGE", "a re-REGISTER cannot pass the per-connection cap")
        check_eq(bus.stats()["subscriptions"], 1000, "nothing added")
        # Re-sending what one holds costs nothing (liblexbus re-REGISTERs with its whole list).
        c.send({"type": "REGISTER", "serviceName": "subs", "subscribe": pats + pats[:10]})
        check_eq(c.recv()["type"], "REGISTER_ACK", "re-REGISTER with the same patterns")
        c.send({"type": "SUBSCRIBE", "id": "s1", "events": ["q%d" % i for i in range(24)]})
        check_eq(c.recv()["subscriptions"], 1024, "up to the cap")
        c.send({"type": "SUBSCRIBE", "id": "s2", "events": ["p1:*", "q0"]})
        check_eq(c.recv()["type"], "ACK", "re-subscribing held patterns at the cap")
        c.send({"type": "SUBSCRIBE", "id": "s3", "events": ["q0", "new"]})
        check_eq(error_code(c.recv()), "INVALID_MESSAGE", "one new pattern past the cap")


@test
def ambiguous_context_refused():
    """The bus reads the first "depth", a recipient's parser the last: refuse."""
    with Bus() as bus:
        svc = bus.client("svc", methods=["m"])
        c = bus.client("c")
        for ctx in (b'{"depth":1,"depth":500}', b'{"dep\\u0074h":500}', b'{"deadline":1,"deadline":null}'):
            c.send(b'{"type":"CALL","id":"x","to":"svc","method":"m","context":' + ctx + b'}')
            r = c.recv()
            check_eq((r["type"], error_code(r)), ("RESPONSE", "INVALID_MESSAGE"), "context %r" % ctx)
        c.send({"type": "CALL", "id": "ok", "to": "svc", "method": "m",
                "context": {"depth": 1, "other": {"depth": 2, "depth ": 3}, "x": 1}})
        check_eq(svc.recv_type("CALL")["id"], "ok", "nested and unrelated members are fine")


@test
def token_must_be_a_string_everywhere():
    """A non-string `token` would reach recipients looking like verified claims."""
    with Bus() as bus:
        svc = bus.client("svc", methods=["m"], subscribe=["ev"])
        c = bus.client("c")
        r = c.call("svc", "m", token={"source": "admin", "jti": "forged"})
        check_eq((r["status"], error_code(r)), ("error", "UNAUTHENTICATED"), "object token on a CALL")
        c.send({"type": "EMIT", "event": "ev", "payload": 1, "token": ["x"]})
        check_eq(error_code(c.recv()), "UNAUTHENTICATED", "array token on an EMIT")
        c.send({"type": "EMIT", "event": "ev", "payload": 1, "token": "t" * 9000})
        check_eq(error_code(c.recv()), "UNAUTHENTICATED", "over-long token")
        c.send({"type": "EMIT", "event": "ev", "payload": 2, "ack": True, "id": "ok"})
        check_eq(c.recv_type("ACK")["delivered"], 1, "a clean EMIT still goes through")
        check_eq(svc.recv_type("EVENT")["payload"], 2, "only the clean EMIT was delivered")


@test
def caller_closed_as_slow_consumer_while_its_response_is_routed():
    """The RESPONSE that overflows the caller's queue closes the caller; the
    pending-call entry must be released once, and later calls still work."""
    with Bus(bus="outbuf_high = 4K\noutbuf_max = 4K\n") as bus:
        callee = bus.client("echo", methods=["big"])
        caller = bus.client("caller")
        caller.send({"type": "CALL", "id": "x1", "to": "echo", "method": "big", "params": {}})
        callee.recv_type("CALL")
        caller.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        callee.send({"type": "RESPONSE", "id": "x1", "status": "success", "data": "A" * 200000})
        lbtest.wait_for(lambda: "slow consumer" in bus.logtext(), what="caller closed as slow consumer")
        lbtest.wait_for(lambda: bus.stats()["calls"]["pending"] == 0, what="pending table empty")
        c2, c3 = bus.client("c2"), bus.client("c3")
        c2.send({"type": "CALL", "id": "a", "to": "echo", "method": "big", "params": {}})
        c3.send({"type": "CALL", "id": "b", "to": "echo", "method": "big", "params": {}})
        got = sorted(callee.recv_type("CALL")["id"] for _ in range(2))
        check_eq(got, ["a", "b"], "both calls reached the callee")
        callee.send({"type": "RESPONSE", "id": "a", "status": "success", "data": 1})
        callee.send({"type": "RESPONSE", "id": "b", "status": "success", "data": 2})
        check_eq((c2.recv_type("RESPONSE")["data"], c3.recv_type("RESPONSE")["data"]), (1, 2), "both answered")
        check_eq(bus.stop(), 0, "clean exit")


@test
def out_of_descriptors_pauses_accepting_then_recovers():
    """With every descriptor in use, the listening socket stays readable: the
    bus pauses accepting (logged) instead of spinning, and serves again once
    descriptors are freed."""
    limit = 64
    bus = Bus(preexec=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit)))
    with bus:
        held = []
        for _ in range(limit + 16):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(2)
            s.connect(bus.sock)   # the kernel queues it even when the bus cannot accept
            held.append(s)
        lbtest.wait_for(lambda: "pausing accepts" in bus.logtext(), what="accepts paused")
        check("[unix] accept failed" in bus.logtext(), "logged under the transport's name")
        t0 = cpu_ticks(bus.proc.pid)
        time.sleep(1)
        used = cpu_ticks(bus.proc.pid) - t0
        check(used < 50, "the daemon spins while out of descriptors (%d of 100 ticks in 1 s)" % used)
        for s in held:
            s.close()
        c = lbtest.wait_for(lambda: _try_register(bus), timeout=10, what="served again")
        check_eq(c.call("lexbus", "ping")["status"], "success", "serving after the pause")


def cpu_ticks(pid):
    """User + system CPU time of a process, in clock ticks (1/100 s)."""
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])


def _try_register(bus):
    try:
        return bus.client("after-emfile")
    except Exception:
        return None


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
            # A blocking connect waits while the listen backlog is full; any
            # timeout (settimeout) makes the socket non-blocking, and a
            # non-blocking AF_UNIX connect fails at once with EAGAIN then.
            s.setblocking(True)
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
