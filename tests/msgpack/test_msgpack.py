"""MessagePack clients (Bro IPC's default serializer) through the real
daemon on the unix transport: frames packed by Python's msgpack, every
frame the bus sends them checked to be MessagePack, interoperating with
JSON clients in every direction."""
import os
import signal
import struct
import subprocess
import sys
import time

import msgpack

import lbtest
from lbtest import Bus, Closed, check, check_eq, test
from mputil import MpClient, answer, is_map_byte, mp_client, mp_raw, pack


def now_ms():
    return int(time.time() * 1000)


def bro_context(*chain, timeout_ms=30000):
    """What a Bro client sends: chain of callers, depth = len(chain)."""
    return {"root": "root-%d-k2j9xq" % now_ms(), "chain": list(chain), "depth": len(chain),
            "deadline": now_ms() + timeout_ms}


# Every kind of value, and every width MessagePack encodes them with.
VALUES = {
    "ints": [0, 1, -1, 127, 128, -32, -33, 255, 256, 65535, 65536, 2**31, 2**32, 2**63 - 1, 2**63, 2**64 - 1,
             -2**31, -2**63],
    "floats": [0.5, 1e300, 3.141592653589793, 1e-300, 2.0],
    "strings": ["", "é", "日本", "😀", "\x00\x1f", '"\\/', "x" * 300, "y" * 70000],
    "literals": [True, False, None],
    "nested": {"a": [[{}], []], "b": {"c": {"d": [1, {"e": "f"}]}}},
}


def alive(c):
    """The connection is still served: a HEARTBEAT with an id is echoed."""
    c.send({"type": "HEARTBEAT", "id": "still-here"})
    check_eq(c.recv_type("HEARTBEAT")["id"], "still-here", "connection still served")


@test
def register_ack_and_heartbeats_in_msgpack():
    with Bus() as bus:
        c = mp_raw(bus)
        ack = c.register("user-service", methods=["getUserById"], metadata={})
        check_eq((ack["type"], ack["node"], ack["serviceName"]), ("REGISTER_ACK", "test-node", "user-service"), "ack")
        check(is_map_byte(c.last_body[0]), "REGISTER_ACK is a MessagePack map")
        # Bro's HEARTBEAT (no id) gets nothing back; with an id, an answer.
        c.send({"type": "HEARTBEAT", "from": "user-service", "timestamp": now_ms()})
        c.expect_nothing()
        alive(c)
        check("speaks MessagePack" in bus.logtext(), "the log says which encoding")


@test
def msgpack_caller_json_callee_and_the_reverse():
    with Bus() as bus:
        mp = mp_client(bus, "mp-svc", methods=["echo"])
        js = bus.client("json-svc", methods=["echo"])
        # MessagePack caller -> JSON callee: every value arrives the same.
        mp.send({"type": "CALL", "id": "c1", "from": "mp-svc", "to": "json-svc", "method": "echo",
                 "params": VALUES, "context": bro_context("mp-svc", "mp-svc")})
        call = js.recv()
        check_eq(call["params"], VALUES, "JSON callee sees the values")
        js.send({"type": "RESPONSE", "id": "c1", "status": "success", "data": call["params"], "context": call["context"]})
        r = mp.recv_type("RESPONSE")
        check_eq((r["id"], r["status"], r["data"]), ("c1", "success", VALUES), "MessagePack caller gets them back")
        check_eq(r["context"]["chain"], ["mp-svc", "mp-svc"], "context echoed")
        # JSON caller -> MessagePack callee.
        js.send({"type": "CALL", "id": "c2", "to": "mp-svc", "method": "echo", "params": VALUES})
        call = mp.recv()
        check_eq((call["type"], call["from"], call["params"]), ("CALL", "json-svc", VALUES), "MessagePack callee")
        check_eq(call["context"]["depth"], 1, "the bus's context")
        answer(mp, call)
        r = js.recv()
        check_eq((r["status"], r["data"]), ("success", VALUES), "JSON caller")


@test
def msgpack_to_msgpack_is_forwarded_as_written():
    with Bus() as bus:
        a = mp_client(bus, "svc-a", methods=["m"])
        b = mp_client(bus, "svc-b")
        # As Bro writes it (from and context present): the bus forwards it
        # unchanged, so the callee gets the caller's bytes.
        msg = {"type": "CALL", "id": "req-1", "from": "svc-b", "to": "svc-a", "method": "m",
               "params": {"f32": 0.5, "x": VALUES["ints"]}, "context": bro_context("svc-b", "svc-b")}
        body = msgpack.packb(msg, use_single_float=True)
        b.send(body)
        a.recv()
        check_eq(a.last_body, body, "CALL bytes as the caller wrote them")
        reply = msgpack.packb({"type": "RESPONSE", "id": "req-1", "from": "svc-a", "to": "svc-b", "status": "success",
                               "data": {"big": "z" * 100000}, "context": msg["context"]})
        a.send(reply)
        b.recv()
        check_eq(b.last_body, reply, "RESPONSE bytes as the callee wrote them")


@test
def nested_calls_carry_the_context():
    with Bus() as bus:
        order = mp_client(bus, "order-service")
        user = mp_client(bus, "user-service", methods=["getUserById"])
        db = bus.client("db-service", methods=["query"])
        ctx = bro_context("order-service", "order-service")
        order.send({"type": "CALL", "id": "req-1", "from": "order-service", "to": "user-service",
                    "method": "getUserById", "params": {"userId": "123"}, "context": ctx})
        c1 = user.recv()
        check_eq(c1["context"], ctx, "first hop: context as sent")
        # While serving it, user-service calls db-service (JSON) with the
        # context extended, as Bro's extendContext does.
        nested = dict(c1["context"], chain=c1["context"]["chain"] + ["user-service"], depth=c1["context"]["depth"] + 1)
        user.send({"type": "CALL", "id": "req-2", "from": "user-service", "to": "db-service", "method": "query",
                   "params": {"sql": "select"}, "context": nested})
        c2 = db.recv()
        check_eq((c2["context"]["root"], c2["context"]["chain"], c2["context"]["depth"], c2["context"]["deadline"]),
                 (ctx["root"], ["order-service", "order-service", "user-service"], 3, ctx["deadline"]), "second hop")
        db.send({"type": "RESPONSE", "id": "req-2", "status": "success", "data": {"row": 1}, "context": c2["context"]})
        r2 = user.recv_type("RESPONSE")
        check_eq((r2["id"], r2["data"], r2["context"]["depth"]), ("req-2", {"row": 1}, 3), "nested answer")
        answer(user, c1, data={"id": "123", "row": r2["data"]})
        r1 = order.recv_type("RESPONSE")
        check_eq((r1["id"], r1["data"]["row"], r1["context"]), ("req-1", {"row": 1}, ctx), "outer answer")


@test
def error_codes_reach_msgpack_clients():
    with Bus(call_timeout="400ms", bus="max_depth = 5\n") as bus:
        early = mp_raw(bus)
        early.send({"type": "CALL", "id": "c0", "to": "x", "method": "m"})
        check_eq(early.recv()["error"]["code"], "NOT_REGISTERED", "NOT_REGISTERED")
        a = mp_client(bus, "svc-a", methods=["m"])
        b = mp_client(bus, "svc-b")
        check_eq(b.call("ghost", "m")["error"]["code"], "SERVICE_NOT_FOUND", "SERVICE_NOT_FOUND")
        check_eq(b.call("svc-a", "nope")["error"]["code"], "METHOD_NOT_FOUND", "METHOD_NOT_FOUND")
        r = b.call("svc-a", "m", **{"from": "mallory"})
        check_eq(r["error"]["code"], "FORBIDDEN", "FORBIDDEN")
        r = b.call("svc-a", "m", context={"root": "r", "chain": [], "depth": 1, "deadline": now_ms() - 1000})
        check_eq(r["error"]["code"], "DEADLINE_EXCEEDED", "DEADLINE_EXCEEDED")
        r = b.call("svc-a", "m", context={"root": "r", "chain": [], "depth": 6, "deadline": now_ms() + 9000})
        check_eq(r["error"]["code"], "MAX_DEPTH_EXCEEDED", "MAX_DEPTH_EXCEEDED")
        b.send({"type": "CALL", "id": "c-t", "to": "svc-a", "method": "m"})
        a.recv()
        check_eq(b.recv()["error"]["code"], "TIMEOUT", "TIMEOUT")
        # The callee's own error RESPONSE (Bro: METHOD_NOT_FOUND from the
        # service) reaches the caller as written.
        b.send({"type": "CALL", "id": "c-e", "to": "svc-a", "method": "m"})
        call = a.recv()
        a.send({"type": "RESPONSE", "id": call["id"], "status": "error",
                "error": {"message": "Method 'm' failed", "code": "EXECUTION_FAILED", "stack": "IPCError"}})
        r = b.recv()
        check_eq((r["status"], r["error"]["code"], r["error"]["stack"]), ("error", "EXECUTION_FAILED", "IPCError"), "callee error")
        b.send({"type": "CALL", "id": "c-u", "to": "svc-a", "method": "m"})
        a.recv()
        a.close()
        check_eq(b.recv()["error"]["code"], "SERVICE_UNAVAILABLE", "SERVICE_UNAVAILABLE")
        b.send({"type": "SUBSCRIBE"})
        check_eq(b.recv()["error"]["code"], "INVALID_MESSAGE", "INVALID_MESSAGE")
        alive(b)


@test
def bad_frames_and_too_large_close_with_a_msgpack_error():
    with Bus(bus="max_frame = 4K\n") as bus:
        c = mp_client(bus, "svc-z")
        c.send_raw(struct.pack(">I", 0))
        msgs = c.expect_closed()
        check_eq(msgs[-1]["error"]["code"], "BAD_FRAME", "BAD_FRAME in MessagePack")
        c = mp_client(bus, "svc-y")
        c.send_raw(struct.pack(">I", 4097) + b"\x80")
        check_eq(c.expect_closed()[-1]["error"]["code"], "PAYLOAD_TOO_LARGE", "PAYLOAD_TOO_LARGE in MessagePack")
        # A frame within max_frame whose JSON form is not: refused, and the
        # stream goes on (its framing is intact).
        c = mp_client(bus, "svc-x")
        c.send({"type": "EMIT", "id": "e1", "event": "a", "payload": "\x01" * 1000})
        e = c.recv()
        check_eq((e["type"], e["id"], e["error"]["code"]), ("ERROR", "e1", "PAYLOAD_TOO_LARGE"), "too large as JSON")
        check("as JSON" in e["error"]["message"], "says why: %r" % e["error"]["message"])
        alive(c)


@test
def shutting_down_in_msgpack():
    with Bus() as bus:
        a = mp_client(bus, "svc-a", methods=["slow"])
        b = mp_client(bus, "svc-b")
        b.send({"type": "CALL", "id": "c1", "to": "svc-a", "method": "slow"})
        a.recv()
        bus.send_signal(signal.SIGTERM)
        check_eq(b.recv()["error"]["code"], "SHUTTING_DOWN", "SHUTTING_DOWN")
        check_eq(bus.proc.wait(10), 0, "exit status")


@test
def heartbeat_eviction_told_in_msgpack():
    with Bus(heartbeat="200ms") as bus:
        quiet = mp_client(bus, "quiet")
        t = time.time()
        msgs = quiet.expect_closed(timeout=5)
        check(msgs and msgs[-1]["error"]["code"] == "TIMEOUT", "told why, in MessagePack: %r" % msgs)
        check(time.time() - t >= 0.55, "not before 3 intervals")
        chatty = mp_client(bus, "chatty")
        for _ in range(8):
            chatty.send({"type": "HEARTBEAT", "from": "chatty", "timestamp": now_ms()})
            time.sleep(0.1)
        alive(chatty)


@test
def reconnect_registers_again_in_either_encoding():
    with Bus() as bus:
        caller = bus.client("caller")
        for round_, make in enumerate((mp_client, mp_client, lambda b, n, **kw: b.client(n, **kw), mp_client)):
            svc = make(bus, "flaky", methods=["ping"])
            caller.send({"type": "CALL", "id": "p%d" % round_, "to": "flaky", "method": "ping"})
            call = svc.recv()
            svc.send({"type": "RESPONSE", "id": call["id"], "status": "success", "data": round_})
            check_eq(caller.recv()["data"], round_, "round %d answered" % round_)
            svc.close()
            lbtest.wait_for(lambda: "flaky" not in [s["name"] for s in caller.call("lexbus", "services")["data"]],
                            what="the old connection to go")


@test
def events_reach_mixed_subscribers():
    with Bus() as bus:
        subs = [bus.client("j1", subscribe=["news:*"]), mp_client(bus, "m1", subscribe=["news:*"]),
                bus.client("j2", subscribe=["news:>"]), mp_client(bus, "m2", subscribe=["news:>"])]
        for emitter in (mp_client(bus, "mp-emitter"), bus.client("json-emitter")):
            emitter.send({"type": "EMIT", "id": "e-" + emitter.name, "event": "news:today", "payload": VALUES, "ack": True})
            check_eq(emitter.recv_type("ACK")["delivered"], 4, "four subscribers")
            for s in subs:
                ev = s.recv_type("EVENT")
                check_eq((ev["event"], ev["from"], ev["payload"]), ("news:today", emitter.name, VALUES),
                         "%s got the event from %s" % (s.name, emitter.name))
        # A service-targeted EMIT to a MessagePack service.
        j = bus.client("j3")
        j.send({"type": "EMIT", "event": "direct", "to": "m1", "payload": [1, "two"]})
        ev = subs[1].recv_type("EVENT")
        check_eq((ev["to"], ev["payload"]), ("m1", [1, "two"]), "targeted event")


@test
def numbers_across_encodings():
    with Bus() as bus:
        js = bus.client("js", subscribe=["n"])
        mp = mp_client(bus, "mp", subscribe=["n"])
        mp.send({"type": "EMIT", "event": "n", "payload": [2**64 - 1, -2**63, 0.1]})
        js.recv_type("EVENT")
        check(b"[18446744073709551615,-9223372036854775808,0.1]" in js.last_body,
              "64-bit integers exact as JSON text: %r" % js.last_body)
        mp.recv_type("EVENT")
        # JSON numbers MessagePack has no integer for: the nearest double
        # (as JSON.parse); beyond the double range: Infinity.
        js.send_raw(lbtest.frame(b'{"type":"EMIT","event":"n","payload":[123456789012345678901234567890,1e400,-0]}'))
        ev = mp.recv_type("EVENT")
        check_eq(ev["payload"][0], 1.2345678901234568e+29, "huge integer as float64")
        check(ev["payload"][1] == float("inf"), "1e400 as Infinity")
        check(str(ev["payload"][2]) == "-0.0", "-0 as float64 -0.0")
        # The bus's own numeric fields keep their ranges.
        r = mp.call("js", "m", context={"root": "r", "chain": [], "depth": 1, "deadline": 2**64 - 1})
        check_eq(r["error"]["code"], "INVALID_MESSAGE", "deadline beyond int64")
        check("deadline" in r["error"]["message"], "names the field")


BAD = [
    ("bin", {"type": "EMIT", "event": "a", "payload": b"\x00\x01"}, "bin (2 bytes)"),
    ("ext", {"type": "EMIT", "event": "a", "payload": msgpack.ExtType(5, b"abc")}, "ext type 5"),
    ("timestamp", {"type": "EMIT", "event": "a", "payload": msgpack.Timestamp(1700000000, 0)}, "timestamp"),
    ("NaN", {"type": "EMIT", "event": "a", "payload": float("nan")}, "NaN"),
    ("Infinity", {"type": "EMIT", "event": "a", "payload": [float("inf")]}, "Infinity"),
    ("integer key", {"type": "EMIT", "event": "a", "payload": {1: "one"}}, "map key is an integer"),
    ("nil key", {"type": "EMIT", "event": "a", "payload": {None: 1}}, "map key is nil"),
]


@test
def values_without_json_form_are_refused_by_name():
    with Bus() as bus:
        c = mp_client(bus, "svc")
        for what, msg, phrase in BAD:
            c.send(msgpack.packb(msg, use_bin_type=True, strict_types=False))
            e = c.recv()
            check_eq((e["type"], e["error"]["code"]), ("ERROR", "INVALID_MESSAGE"), what)
            check(phrase in e["error"]["message"], "%s: %r names it" % (what, e["error"]["message"]))
        # A CALL with a value JSON cannot carry is answered as a call: the
        # caller's pending call settles (Bro rejects it at once).
        c.send({"type": "CALL", "id": "req-b", "from": "svc", "to": "svc", "method": "upload",
                "params": {"file": b"\x89PNG"}, "context": bro_context("svc")})
        r = c.recv()
        check_eq((r["type"], r["id"], r["status"], r["error"]["code"]), ("RESPONSE", "req-b", "error", "INVALID_MESSAGE"),
                 "error RESPONSE to the CALL")
        check("bin" in r["error"]["message"] and "base64" in r["error"]["message"], "with a hint")
        # Invalid UTF-8 in a str.
        c.send_raw(lbtest.frame(b"\x83\xa4type\xa4EMIT\xa5event\xa1a\xa7payload\xa2\xc3\x28"))
        check("UTF-8" in c.recv()["error"]["message"], "UTF-8 checked")
        alive(c)


def deep(n):
    return b"\x91" * n + b"\x01"


@test
def malformed_msgpack_is_refused_and_the_stream_goes_on():
    with Bus() as bus:
        c = mp_client(bus, "svc")
        emit = pack({"type": "EMIT", "event": "a", "payload": 1})
        cases = [
            ("truncated", emit[:-1], "truncated"),
            ("trailing bytes", emit + b"\xc0\xc0", "2 bytes after the end"),
            ("str32 claiming 4 GiB", b"\x82\xa4type\xa4EMIT\xa1e\xdb\xff\xff\xff\xffabc", "truncated"),
            ("array32 claiming 4G elements", b"\x81\xa1a\xdd\xff\xff\xff\xff\x01", "claims 4294967295 elements"),
            ("map16 claiming more than the frame holds", b"\xde\xff\xff\xa1a\x01", "claims 65535 pairs"),
            ("ext32 of 4 GiB", b"\x81\xa1a\xc9\xff\xff\xff\xff\x05", "ext32 claims 4 GiB"),
            ("0xc1", b"\x81\xa1a\xc1", "0xc1"),
            ("nesting past the limit", b"\x82\xa4type\xa4EMIT\xa1p" + deep(64), "nesting deeper than 64"),
            ("not a map", b"\x92\x01\x02", "a message is a map"),
            ("duplicate member", b"\x83\xa4type\xa4EMIT\xa5event\xa1a\xa5event\xa1b", "given twice"),
            # What the envelope built while decoding must refuse as the JSON scanner would:
            ("escaped member name", b"\x83\xa4type\xa4EMIT\xa5event\xa1a\xa5fr\"om\xa1x", "written with escapes"),
            ("missing type", b"\x82\xa5event\xa1a\xa7payload\x01", "missing \"type\""),
            ("unknown type", b"\x82\xa4type\xa4EMIX\xa5event\xa1a", "unknown or non-string"),
            ("non-string type", b"\x82\xa4type\x01\xa5event\xa1a", "unknown or non-string"),
        ]
        for what, body, phrase in cases:
            c.send_raw(lbtest.frame(body))
            e = c.recv()
            check_eq(e["error"]["code"], "INVALID_MESSAGE", what)
            check(phrase in e["error"]["message"], "%s: %r" % (what, e["error"]["message"]))
        ok = b"\x83\xa4type\xa4EMIT\xa5event\xa1a\xa7payload" + deep(61)
        c.send_raw(lbtest.frame(ok))
        c.expect_nothing()
        alive(c)


@test
def one_connection_one_encoding():
    with Bus() as bus:
        mp = mp_client(bus, "mp")
        mp.send_raw(lbtest.frame(b' {"type":"HEARTBEAT","id":"h"}'))
        e = mp.recv()
        check_eq(e["error"]["code"], "INVALID_MESSAGE", "JSON on a MessagePack connection")
        check("a JSON frame on a connection that speaks MessagePack" in e["error"]["message"], e["error"]["message"])
        alive(mp)
        js = bus.client("js")
        js.send_raw(lbtest.frame(pack({"type": "HEARTBEAT", "id": "h"})))
        e = js.recv()
        check("a MessagePack frame on a connection that speaks JSON" in e["error"]["message"], e["error"]["message"])
        alive(js)
        # The first frame decides even when it is refused: its ERROR is in
        # MessagePack already.
        first = mp_raw(bus)
        first.send({"type": "REGISTER", "serviceName": "s", "methods": [], "metadata": {"blob": b"\x00"}})
        e = first.recv()
        check_eq(e["error"]["code"], "INVALID_MESSAGE", "bad first frame")
        check(is_map_byte(first.last_body[0]), "answered in MessagePack")
        check_eq(first.register("s")["type"], "REGISTER_ACK", "then registers")
        # A first frame that is neither is answered in JSON and fixes nothing.
        neither = bus.raw()
        neither.send_raw(lbtest.frame(b"hello"))
        check_eq(neither.recv()["error"]["code"], "INVALID_MESSAGE", "neither")
        neither.__class__ = MpClient
        check_eq(neither.register("late-mp")["type"], "REGISTER_ACK", "MessagePack after an unrecognised frame")


def pinned(encoding):
    bus = Bus(start=False)
    text = open(bus.conf).read().replace("[plugin unix]\n", "[plugin unix]\nencoding = %s\n" % encoding)
    bus.write_conf(text)
    return bus.start()


@test
def encoding_key_pins_the_listener():
    with pinned("msgpack") as bus:
        c = bus.raw()
        c.send({"type": "REGISTER", "serviceName": "js", "methods": []})
        c.__class__ = MpClient
        e = c.recv()
        check("a JSON frame on a connection that speaks MessagePack (set by the listener's encoding key)"
              in e["error"]["message"], e["error"]["message"])
        m = mp_client(bus, "mp")
        alive(m)
    with pinned("json") as bus:
        c = mp_raw(bus)
        c.send({"type": "REGISTER", "serviceName": "mp", "methods": []})
        c.__class__ = lbtest.RawClient
        e = c.recv()
        check("a MessagePack frame on a connection that speaks JSON (set by the listener's encoding key)"
              in e["error"]["message"], e["error"]["message"])
        alive(bus.client("js"))
    with pinned("auto") as bus:
        alive(mp_client(bus, "mp"))
        early = bus.client("js")
        alive(early)
        # SIGHUP: new connections get the new value; open ones keep theirs.
        bus.write_conf(open(bus.conf).read().replace("encoding = auto", "encoding = msgpack"))
        bus.send_signal(signal.SIGHUP)
        lbtest.wait_for(lambda: "configuration reloaded" in bus.logtext(), what="reload")
        late = bus.raw()
        late.send({"type": "HEARTBEAT", "id": "h"})
        late.__class__ = MpClient
        check("(set by the listener's encoding key)" in late.recv()["error"]["message"], "reloaded key applies")
        alive(early)
    with Bus(start=False) as bus:
        text = open(bus.conf).read().replace("[plugin unix]\n", "[plugin unix]\nencoding = yaml\n")
        bus.write_conf(text)
        r = subprocess.run([lbtest.LEXBUSD, "-t", "-c", bus.conf], capture_output=True, text=True, timeout=20)
        check(r.returncode != 0, "lexbusd -t refuses it")
        line = text.splitlines().index("encoding = yaml") + 1
        check("bus.conf:%d: bad value 'yaml' for 'encoding' (expected auto, json or msgpack)" % line in r.stderr + r.stdout,
              r.stderr + r.stdout)


@test
def pool_answers_on_any_socket_of_the_pool():
    """Bro's poolSize > 1: N sockets REGISTER the same name with metadata
    {poolIndex, poolSize}; every message, answers included, goes out on the
    next socket of the pool, not the one the CALL came in on."""
    with Bus() as bus:
        pool = [mp_client(bus, "pooled", methods=["work"], metadata={"poolIndex": i, "poolSize": 3}) for i in range(3)]
        caller = bus.client("caller")
        for i in range(6):
            caller.send({"type": "CALL", "id": "w%d" % i, "to": "pooled", "method": "work", "params": {"i": i}})
        got = {}
        for k, s in enumerate(pool):
            for _ in range(2):
                call = s.recv()
                got[call["id"]] = k
        check_eq(sorted(got.values()), [0, 0, 1, 1, 2, 2], "calls spread round-robin over the pool")
        for cid, k in sorted(got.items()):
            answer(pool[(k + 1) % 3], {"id": cid, "to": "pooled", "from": "caller", "params": {"by": k}})
        answers = {}
        for _ in range(6):
            r = caller.recv()
            answers[r["id"]] = r
        check_eq(sorted(answers), sorted(got), "every call answered")
        check(all(r["status"] == "success" for r in answers.values()), "all succeeded: %r" % answers)
        # Another process registered under the same name cannot answer for
        # a socket it does not hold.
        caller.send({"type": "CALL", "id": "held", "to": "pooled", "method": "work"})
        k, _ = recv_any(pool)
        forge = subprocess.run([sys.executable, "-c", FORGER, bus.sock], capture_output=True, text=True, timeout=20,
                               env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
        check_eq(forge.returncode, 0, "forger ran: " + forge.stderr)
        caller.expect_nothing(0.5)
        answer(pool[(k + 1) % 3], {"id": "held", "to": "pooled", "from": "caller", "params": "real"})
        check_eq(caller.recv()["data"], "real", "only the pool's own process answers")


def recv_any(clients, timeout=5.0):
    """(index, frame) of the first of `clients` to receive a frame."""
    end = time.time() + timeout
    while time.time() < end:
        for i, c in enumerate(clients):
            try:
                return i, c.recv(0.05)
            except lbtest.TestFailure:
                pass
    raise lbtest.TestFailure("no frame on any of %d connections" % len(clients))


FORGER = r"""
import sys
from mputil import MpClient
c = MpClient.unix(sys.argv[1])
assert c.register("pooled", methods=["other"], metadata={"poolIndex": 9, "poolSize": 10})["type"] == "REGISTER_ACK"
c.send({"type": "RESPONSE", "id": "held", "status": "success", "data": "forged"})
c.send({"type": "HEARTBEAT", "id": "sync"})
assert c.recv_type("HEARTBEAT")["id"] == "sync"
"""


lbtest.main()
