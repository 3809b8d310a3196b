"""What a hostile client or an unlucky operator found (issue 8), each through
the real daemon: broadcasts and slow subscribers, the REGISTER deadline,
call ids shared by callers, forged RESPONSE members, the output budget,
self-flooding, services paging, SUBSCRIBE cost, deadlines, reloads that are
all or nothing and do not leak, audit records of refusals."""
import json
import os
import signal
import socket
import time

import lbtest
from lbtest import Bus, Closed, check, check_eq, test, wait_for


def error_code(m):
    return (m.get("error") or {}).get("code")


def flood(pub, frame, seconds):
    """Writes `frame` over and over, non-blocking, for `seconds`; returns
    how many frames went out whole (a partial last one is never delivered)."""
    pub.sock.setblocking(False)
    chunk = frame * 64
    pending, total, t = b"", 0, time.time()
    while time.time() - t < seconds:
        if not pending:
            pending = chunk
        try:
            n = pub.sock.send(pending)
            pending = pending[n:]
            total += n
        except BlockingIOError:
            time.sleep(0.01)
    pub.sock.setblocking(True)
    return total // len(frame)


def read_all(c, n, timeout=20):
    got = 0
    end = time.time() + timeout
    while got < n and time.time() < end:
        c.recv(max(0.1, end - time.time()))
        got += 1
    return got


@test
def a_subscriber_that_never_reads_does_not_hold_publishers():
    """Item 4 and 16: a broadcast subscriber past outbuf_max is closed with
    SLOW_CONSUMER sent first; the publisher is never paused for it."""
    with Bus(bus="outbuf_high = 64K\noutbuf_max = 1M\nslow_consumer_timeout = 30s\n") as bus:
        bad = bus.client("bad", subscribe=[">"])
        bad.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        good = bus.client("good", subscribe=["news:*"])
        pub = bus.client("pub")
        frame = lbtest.frame({"type": "EMIT", "event": "news:x", "payload": "y" * 500})
        n = 64 * 80
        for _ in range(n // 64):
            pub.send_raw(frame * 64)
            # The healthy subscriber keeps up (it reads as it goes).
            check_eq(read_all(good, 64), 64, "the healthy subscriber keeps getting events")
        st = bus.stats()
        check_eq(st["senderPauses"], 0, "no publisher was paused for the subscriber that does not read")
        check(st["slowConsumers"] >= 1, "the one that never reads was closed: %r" % st["slowConsumers"])
        # What it finds when it finally reads: some whole events, then the
        # error saying why it was cut off (not megabytes of events first).
        frames = bad.expect_closed(timeout=10)
        errs = [m for m in frames if m.get("type") == "ERROR"]
        check(errs and error_code(errs[-1]) == "SLOW_CONSUMER", "SLOW_CONSUMER reached it: %r" % frames[-2:])
        check(len(frames) < 1000, "its queue was dropped before the error (%d frames)" % len(frames))


@test
def slow_consumer_drop_policy_counts_and_reports_drops():
    with Bus(bus="outbuf_high = 64K\noutbuf_max = 256K\nslow_consumer = drop\n") as bus:
        bad = bus.client("bad", subscribe=["news:*"])
        bad.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        pub = bus.client("pub")
        frame = lbtest.frame({"type": "EMIT", "event": "news:x", "payload": "z" * 500})
        for _ in range(40):
            pub.send_raw(frame * 64)
        pub.send({"type": "EMIT", "event": "news:x", "payload": 1, "ack": True, "id": "last"})
        check_eq(pub.recv_type("ACK", timeout=10)["id"], "last", "the publisher is served")
        st = bus.stats()
        check(st["events"]["dropped"] > 0, "drops counted: %r" % st["events"])
        check_eq(st["senderPauses"], 0, "no publisher paused")
        # It reads again: it is still connected and is told what it missed.
        seen_error = None
        end = time.time() + 20
        while time.time() < end and not seen_error:
            m = bad.recv(10)
            if m.get("type") == "ERROR":
                seen_error = m
        check(seen_error and error_code(seen_error) == "SLOW_CONSUMER" and "dropped" in seen_error["error"]["message"],
              "a drop report: %r" % seen_error)
        pub.send({"type": "EMIT", "event": "news:x", "payload": "after"})
        m = bad.recv_type("EVENT", timeout=10)
        while m["payload"] != "after":
            m = bad.recv_type("EVENT", timeout=10)
        check_eq(m["payload"], "after", "still subscribed after the drops")


@test
def unregistered_connections_get_a_register_deadline():
    """Item 5: HEARTBEATs do not keep an unregistered connection alive."""
    with Bus(bus="register_timeout = 500ms\n", heartbeat="200ms") as bus:
        idle = bus.raw()
        t = time.time()
        frames = []
        while time.time() - t < 5:
            try:
                idle.send({"type": "HEARTBEAT", "from": "nobody", "timestamp": 1})
                frames += [idle.recv(0.1)]
            except lbtest.TestFailure:
                pass
            except (Closed, BrokenPipeError, ConnectionResetError):
                break
        check(time.time() - t < 4, "closed within the deadline (took %.1fs)" % (time.time() - t))
        check(any(error_code(m) == "NOT_REGISTERED" for m in frames), "told why: %r" % frames)
        check_eq(bus.stats()["connections"]["registerTimeouts"], 1, "counted")
        # A registered one stays.
        ok = bus.client("ok")
        for _ in range(10):
            ok.send({"type": "HEARTBEAT", "from": "ok", "timestamp": 1})
            time.sleep(0.1)
        ok.send({"type": "HEARTBEAT", "id": "h"})
        check_eq(ok.recv_type("HEARTBEAT")["id"], "h", "a registered connection is not affected")


@test
def two_callers_may_use_the_same_call_id():
    """Item 7: calls are keyed by caller as well as by callee."""
    with Bus() as bus:
        svc = bus.client("svc", methods=["echo"])
        a, b = bus.client("a"), bus.client("b")
        a.send({"type": "CALL", "id": "x1", "to": "svc", "method": "echo", "params": {"who": "a"}})
        b.send({"type": "CALL", "id": "x1", "to": "svc", "method": "echo", "params": {"who": "b"}})
        calls = [svc.recv_type("CALL"), svc.recv_type("CALL")]
        check_eq(sorted(c["params"]["who"] for c in calls), ["a", "b"], "both calls reach the callee")
        check(calls[0]["id"] != calls[1]["id"], "the callee can tell them apart: %r" % [c["id"] for c in calls])
        for c in calls:
            svc.send({"type": "RESPONSE", "id": c["id"], "status": "success", "data": c["params"]["who"]})
        ra, rb = a.recv_type("RESPONSE"), b.recv_type("RESPONSE")
        check_eq((ra["id"], ra["data"], rb["id"], rb["data"]), ("x1", "a", "x1", "b"), "each caller its own answer")
        a.send({"type": "CALL", "id": "x2", "to": "svc", "method": "echo", "params": {}})
        a.send({"type": "CALL", "id": "x2", "to": "svc", "method": "echo", "params": {}})
        svc.recv_type("CALL")
        r = a.recv_type("RESPONSE")
        check_eq((r["id"], error_code(r)), ("x2", "INVALID_MESSAGE"), "one caller, one id in flight at a time")


@test
def responses_carry_only_what_the_bus_vouches_for():
    """Item 8: a callee cannot forge `token`, `auth` or the addressee."""
    with Bus() as bus:
        svc = bus.client("svc", methods=["who"])
        caller = bus.client("caller")
        caller.send({"type": "CALL", "id": "f1", "to": "svc", "method": "who", "params": {}})
        c = svc.recv_type("CALL")
        svc.send({"type": "RESPONSE", "id": c["id"], "from": "svc", "to": "someone-else", "status": "success",
                  "data": {"ok": True}, "token": "eyJhbGciOiJub25lIn0.eyJhZG1pbiI6dHJ1ZX0.", "auth": "admin", "extra": 7})
        r = caller.recv_type("RESPONSE")
        check_eq((r["id"], r["from"], r["to"], r["data"]), ("f1", "svc", "caller", {"ok": True}), "rewritten")
        check("token" not in r and "auth" not in r, "forged members stripped: %r" % r)
        check_eq(r.get("extra"), 7, "members the bus does not own pass through")


@test
def a_connection_flooding_itself_is_paused_and_the_budget_holds():
    """Item 15: self-delivery pauses the sender too; a bus-wide budget caps
    what non-reading connections can queue together."""
    with Bus(bus="outbuf_high = 64K\noutbuf_max = 32M\noutbuf_total_max = 32M\n") as bus:
        me = bus.client("me")
        me.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        frame = lbtest.frame({"type": "EMIT", "event": "self:x", "to": "me", "payload": "q" * 1000})
        sent = flood(me, frame, 3)
        st = bus.stats()
        check(st["senderPauses"] >= 1, "the self-flooding connection was paused")
        check(st["outbufTotal"] < 8 << 20, "its queue stayed near outbuf_high: %d bytes" % st["outbufTotal"])
        check_eq(read_all(me, sent, timeout=30), sent, "and it lost nothing")
    with Bus(bus="outbuf_high = 64K\noutbuf_max = 8M\noutbuf_total_max = 8M\n") as bus:
        sinks = []
        for i in range(4):
            s = bus.client("sink%d" % i, subscribe=["big:*"])
            s.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sinks.append(s)
        pub = bus.client("pub")
        frame = lbtest.frame({"type": "EMIT", "event": "big:x", "payload": "w" * 4000})
        for _ in range(60):
            pub.send_raw(frame * 64)   # 15 MB to each of 4 sinks: 60 MB without a budget
        pub.send({"type": "EMIT", "event": "big:x", "payload": 1, "ack": True, "id": "end"})
        pub.recv_type("ACK", timeout=20)
        st = bus.stats()
        check(st["outbufTotal"] <= (8 << 20) + (1 << 20), "the budget held: %d bytes queued" % st["outbufTotal"])
        check(st["slowConsumers"] >= 1, "the connections over it went: %r" % st["slowConsumers"])


@test
def services_are_paged():
    """Item 14: a small call cannot ask for a megabyte reply."""
    with Bus() as bus:
        names = ["svc-%03d" % i for i in range(260)]
        clients = [bus.client(n) for n in names]
        c = bus.client("asker")
        r = c.call("lexbus", "services")
        check_eq(r["status"], "success", "services")
        first = r["data"]
        check_eq(len(first), 200, "a default page of 200 (the bus's own entry first)")
        check_eq(first[0]["name"], "lexbus", "the bus first")
        seen = [s["name"] for s in first[1:]]
        while True:
            r = c.call("lexbus", "services", {"after": seen[-1], "limit": 100})
            page = [s["name"] for s in r["data"]]
            seen += page
            if len(page) < 100:
                break
        check_eq(sorted(n for n in seen if n.startswith("svc-")), names, "every service once, in order")
        check_eq(seen, sorted(seen), "name order")
        one = c.call("lexbus", "services", {"name": "svc-007"})["data"]
        check_eq([s["name"] for s in one], ["svc-007"], "filter by name")
        bad = c.call("lexbus", "services", {"limit": 100000})
        check_eq(error_code(bad), "INVALID_MESSAGE", "limit bounded")
        r = bus.cli("services")
        check(r.returncode == 0 and "svc-259" in r.stdout, "the CLI pages through: %s" % r.stderr)
        for x in clients:
            x.close()


@test
def subscribe_cost_is_linear():
    """Item 13: 1024 patterns on top of 1024 are refused without scanning
    pairs (the refusal took ~40 ms of loop time each, O(n^2))."""
    with Bus() as bus:
        c = bus.client("subs")
        c.send({"type": "SUBSCRIBE", "id": "s0", "events": ["held:%d" % i for i in range(1024)]})
        check_eq(c.recv_type("ACK")["subscriptions"], 1024, "1024 held")
        new = {"type": "SUBSCRIBE", "id": "s1", "events": ["new:%d" % i for i in range(1024)]}
        frame = lbtest.frame(new)
        ping = bus.client("ping")
        t = time.time()
        for _ in range(50):
            c.send_raw(frame)
        r = ping.call("lexbus", "ping", timeout=30)
        took = time.time() - t
        check_eq(r["status"], "success", "ping")
        refusals = [c.recv(10) for _ in range(50)]
        check(all(error_code(m) == "INVALID_MESSAGE" for m in refusals), "all refused: %r" % refusals[0])
        # 50 refusals: about 2 s of loop time when quadratic (more under
        # sanitizers); linear, a small fraction of that.
        check(took < 1.5, "50 oversized SUBSCRIBEs held the loop %.2f s" % took)
        c.send({"type": "SUBSCRIBE", "id": "s2", "events": ["held:%d" % i for i in range(1024)]})
        check_eq(c.recv_type("ACK")["subscriptions"], 1024, "re-sending what it holds is free")


@test
def deadlines_have_a_defined_range():
    """Item 19: 0 is a deadline long passed; out-of-range values are
    refused saying the range; float milliseconds are read."""
    with Bus() as bus:
        svc = bus.client("svc", methods=["m"])
        c = bus.client("c")
        def call(dl):
            return c.call("svc", "m", context={"depth": 1, "deadline": dl}, timeout=3)
        check_eq(error_code(call(0)), "DEADLINE_EXCEEDED", "deadline 0 has passed")
        r = call(9.3e18)
        check(error_code(r) == "INVALID_MESSAGE" and "253402300799999" in r["error"]["message"], "range said: %r" % r)
        check_eq(error_code(call(-5)), "INVALID_MESSAGE", "negative")
        c.send({"type": "CALL", "id": "fl", "to": "svc", "method": "m",
                "context": {"depth": 1, "deadline": (time.time() + 30) * 1000.0}})
        check_eq(svc.recv_type("CALL")["id"], "fl", "a float deadline in the future is accepted")
        c.send({"type": "CALL", "id": "nl", "to": "svc", "method": "m", "context": {"depth": 1, "deadline": None}})
        check_eq(svc.recv_type("CALL")["id"], "nl", "null: no deadline of the caller's (call_timeout applies)")


@test
def reloads_are_all_or_nothing_and_say_why():
    """Items 3 and 18: a bad section fails the whole reload; the answer and
    the log name the plugin; start-up and reload accept the same files."""
    with Bus(plugins="[plugin ratelimit]\nwindow = 1s\nmax = 1000\n") as bus:
        base = open(bus.conf).read()
        c = bus.client("ops")
        bus.write_conf(base.replace("[bus]\n", "[bus]\nmax_frame = 128\n") + "bogus_key = 1\n")
        r = c.call("lexbus", "reload")
        check_eq(error_code(r), "EXECUTION_FAILED", "refused: %r" % r)
        check("[plugin ratelimit]" in r["error"]["message"] and "bogus_key" in r["error"]["message"],
              "names the plugin and the key: %r" % r["error"]["message"])
        # Nothing of it applied: max_frame is still the default.
        c.send({"type": "EMIT", "event": "big", "payload": "x" * 500, "ack": True, "id": "e1"})
        check_eq(c.recv_type("ACK")["id"], "e1", "max_frame unchanged by the refused reload")
        bus.write_conf(base.replace("max = 1000", "max = nope"))
        r = c.call("lexbus", "reload")
        check(error_code(r) == "EXECUTION_FAILED" and "ratelimit" in r["error"]["message"], "bad value: %r" % r)
        bus.write_conf(base.replace("node = test-node", "node = elsewhere"))
        r = c.call("lexbus", "reload")
        check(r["status"] == "success" and "node" in r["data"].get("restartNeeded", ""),
              "what needs a restart is said: %r" % r)


@test
def reloads_do_not_leak():
    """Item 12: each reload used to keep the old configuration (~2.6 KiB)."""
    env = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:quarantine_size_mb=0"}
    with Bus(env=env, bus="log_level = info\n",
             plugins="[plugin ratelimit]\nwindow = 1s\nmax = 1000\n" + "".join(
                 "limit.svc-%d = 10/1s\n" % i for i in range(40))) as bus:
        def rss():
            with open("/proc/%d/status" % bus.proc.pid) as f:
                return int([l for l in f if l.startswith("VmRSS:")][0].split()[1])
        c = bus.client("ops")
        for _ in range(300):
            c.call("lexbus", "reload")
        before = rss()
        for _ in range(3000):
            c.call("lexbus", "reload")
        grew = rss() - before
        check(grew < 2048, "3000 reloads grew RSS by %d KiB" % grew)


@test
def refusals_are_audited_with_the_name_asked_for():
    """Item 6: a refused REGISTER keeps the attempted name; a CALL with an
    oversized method is on record too."""
    with Bus(plugins="[plugin audit]\nfile = audit.jsonl\n") as bus:
        r = bus.raw()
        check_eq(error_code(r.register("lexbus")), "FORBIDDEN", "the bus's own name")
        r2 = bus.raw()
        check_eq(error_code(r2.register("bad name!")), "INVALID_MESSAGE", "invalid name")
        c = bus.client("c")
        c.send({"type": "CALL", "id": "long", "to": "svc", "method": "m" * 300, "params": {}})
        check_eq(error_code(c.recv_type("RESPONSE")), "INVALID_MESSAGE", "refused")
        path = os.path.join(bus.dir, "audit.jsonl")
        def recs():
            try:
                return [json.loads(l) for l in open(path) if l.strip()]
            except (OSError, ValueError):
                return []
        wait_for(lambda: any(x.get("id") == "long" for x in recs()), what="the audit records")
        regs = [x for x in recs() if x["type"] == "REGISTER" and x["outcome"] != "ok"]
        check(any(x["name"] == "lexbus" and x["outcome"] == "FORBIDDEN" for x in regs), "attempted name: %r" % regs)
        check(any(x["name"] == "bad name!" for x in regs), "escaped and kept: %r" % regs)
        call = [x for x in recs() if x.get("id") == "long"][0]
        check(call["outcome"] == "INVALID_MESSAGE" and call["name"].startswith("mmm") and len(call["name"]) <= 255,
              "bounded: %r" % call)


lbtest.main()
