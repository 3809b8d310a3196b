"""audit through the real daemon: every operation recorded, hash chain verified."""
import hashlib
import json
import os
import signal
import subprocess
import time

import lbtest
from lbtest import Bus, check, check_eq, test


def verify_chain(lines, start_prev="0" * 64):
    """Index of the first line whose prev is wrong, or -1 if the chain holds."""
    prev = start_prev
    for i, raw in enumerate(lines):
        try:
            if json.loads(raw)["prev"] != prev:
                return i
        except ValueError:
            return i
        prev = hashlib.sha256(raw).hexdigest()
    return -1


def read_lines(path):
    with open(path, "rb") as f:
        return [l for l in f.read().split(b"\n") if l]


def audit_bus(extra=""):
    bus = Bus(start=False)
    path = os.path.join(bus.dir, "audit.jsonl")
    bus.write_conf(open(bus.conf).read() + "[plugin audit]\nfile = %s\nchain = yes\n%s" % (path, extra))
    bus.start()
    return bus, path


BIG = "x" * 100000      # a payload that cannot fit in one 64K audit line


def scenario(bus):
    a = bus.client("svc-a", methods=["echo"])
    b = bus.client("svc-b", subscribe=["news:*"])
    b.send({"type": "CALL", "id": "c-ok", "to": "svc-a", "method": "echo", "params": {"secret": 42}})
    a.recv()
    a.send({"type": "RESPONSE", "id": "c-ok", "status": "success", "data": 1})
    b.recv()
    check_eq(b.call("ghost", "x")["error"]["code"], "SERVICE_NOT_FOUND", "missing service")
    a.send({"type": "EMIT", "id": "e1", "event": "news:today", "payload": {"p": 1}, "ack": True})
    a.recv_type("ACK")
    b.recv_type("EVENT")
    b.send({"type": "EMIT", "id": "e2", "event": "x", "to": "ghost"})
    b.recv()
    # The bus's own service.
    check_eq(b.call("lexbus", "ping", {"hello": 1})["status"], "success", "ping")
    check_eq(b.call("lexbus", "nope")["error"]["code"], "METHOD_NOT_FOUND", "unknown system method")
    a.send({"type": "EMIT", "id": "e-big", "event": "news:big", "payload": {"blob": BIG}, "ack": True})
    a.recv_type("ACK", timeout=10)
    check_eq(b.recv_type("EVENT", timeout=10)["payload"]["blob"], BIG, "big event delivered")


# Every operation of the scenario, in order: (type, name, outcome).
EXPECTED = [
    ("REGISTER", "svc-a", "ok"), ("REGISTER", "svc-b", "ok"), ("CALL", "echo", "ok"),
    ("CALL", "x", "SERVICE_NOT_FOUND"), ("EMIT", "news:today", "ok"), ("EMIT", "x", "SERVICE_NOT_FOUND"),
    ("CALL", "ping", "ok"), ("CALL", "nope", "METHOD_NOT_FOUND"), ("EMIT", "news:big", "ok"),
]


def kinds(recs):
    return [(r["type"], r["name"], r["outcome"]) for r in recs]


def sha(raw):
    return hashlib.sha256(raw).hexdigest()


@test
def every_operation_is_recorded_and_the_chain_verifies():
    bus, path = audit_bus()
    with bus:
        scenario(bus)
        check_eq(bus.stop(), 0, "exit")
        lines = read_lines(path)
        recs = [json.loads(l) for l in lines]
        check_eq(kinds(recs), EXPECTED, "audit records")
        call = [r for r in recs if r["type"] == "CALL" and r["outcome"] == "ok"][0]
        check_eq((call["from"], call["to"], call["id"], call["delivered"]), ("svc-b", "svc-a", "c-ok", 1), "call record")
        check(call["durationUs"] > 0 and call["bytes"] > 0, "duration and bytes")
        ping = [r for r in recs if r["name"] == "ping"][0]
        check_eq((ping["from"], ping["to"], ping["delivered"]), ("svc-b", "lexbus", 1), "system call record")
        check(ping["id"].startswith("req-") and ping["bytes"] > 0, "system call id and bytes: %r" % ping)
        nope = [r for r in recs if r["name"] == "nope"][0]
        check_eq((nope["to"], nope["delivered"]), ("lexbus", -1), "failed system call record")
        emit = [r for r in recs if r["name"] == "news:today"][0]
        check_eq(emit["delivered"], 1, "delivered count")
        big = [r for r in recs if r["name"] == "news:big"][0]
        check(big["bytes"] > 100000 and "payloadTruncated" not in big, "big emit without payloads: %r" % big)
        check(all(r["node"] == "test-node" and r["time"] > 0 for r in recs), "time and node")
        check(not any("params" in r or "payload" in r for r in recs), "no payloads unless configured")
        check_eq(verify_chain(lines), -1, "chain verifies")
        r = bus.cli("audit", "verify", path)
        check_eq((r.returncode, json.loads(r.stdout)), (0, {"ok": True, "lines": len(lines), "files": 1,
                                                             "last": sha(lines[-1])}), "lexbus audit verify")
        # One edited byte breaks it.
        tampered = list(lines)
        tampered[2] = tampered[2].replace(b'"ok"', b'"OK"', 1)
        check(tampered[2] != lines[2], "the edit changed a byte")
        check(verify_chain(tampered) != -1, "tampering detected")
        with open(path, "wb") as f:
            f.write(b"\n".join(tampered) + b"\n")
        r = bus.cli("audit", "verify", path)
        check_eq(r.returncode, 1, "lexbus audit verify fails on the edited file")
        check("line 4 " in json.loads(r.stderr)["error"]["message"], r.stderr)


@test
def payloads_when_configured_and_a_large_one_truncated():
    bus, path = audit_bus("payloads = yes\n")
    with bus:
        scenario(bus)
        st = bus.stats()["plugins"]["audit"]
        bus.stop()
        lines = read_lines(path)
        recs = [json.loads(l) for l in lines]
    check_eq(kinds(recs)[:len(EXPECTED)], EXPECTED, "audit records, the 100 KB EMIT included")
    check_eq((st["dropped"], st.get("payloadsTruncated")), (0, 1), "dropped and truncated counters")
    check(all(len(l) < 65536 for l in lines), "every line under 64K")
    check_eq(verify_chain(lines), -1, "chain verifies")
    # A completed call is recorded when its RESPONSE arrives: with its data.
    call = [r for r in recs if r["type"] == "CALL" and r["id"] == "c-ok"][0]
    check_eq(call["data"], 1, "response data recorded")
    check_eq([r for r in recs if r["name"] == "news:today"][0]["payload"], {"p": 1}, "payload recorded")
    big = [r for r in recs if r["name"] == "news:big"][0]
    check_eq((big["payloadTruncated"], big["payloadBytes"], "payload" in big),
             (True, len(json.dumps({"blob": BIG})), False), "large payload left out, its size kept")
    # System calls never carry params or results into the file.
    ping = [r for r in recs if r["name"] == "ping"][0]
    check(not any(k in ping for k in ("params", "data", "error")), "system call without payload: %r" % ping)


@test
def payloads_jansson_cannot_hold_are_recorded_as_text():
    """A payload the bus forwards but jansson cannot represent (1e400, a huge
    integer) is recorded as its JSON text, never left out; NUL escapes stay."""
    bus, path = audit_bus("payloads = yes\n")
    with bus:
        c = bus.client("emitter")
        for eid, payload in (("big", b'{"x":1e400}'), ("int", b'[123456789012345678901234567890]'),
                             ("nul", b'"a\\u0000b"')):
            c.send_raw(lbtest.frame(b'{"type":"EMIT","id":"%s","event":"v","payload":%s,"ack":true}' % (eid.encode(), payload)))
            c.recv_type("ACK")
        bus.stop()
        recs = {r.get("id"): r for r in (json.loads(l) for l in read_lines(path))}
    check_eq((recs["big"].get("payloadText"), "payload" in recs["big"]), ('{"x":1e400}', False), "1e400 as text")
    check_eq(recs["int"].get("payloadText"), "[123456789012345678901234567890]", "a huge integer as text")
    check_eq((recs["nul"].get("payload"), "payloadText" in recs["nul"]), ("a\x00b", False), "a NUL kept")


@test
def token_calls_are_audited_without_the_token():
    bus = Bus(start=False)
    path = os.path.join(bus.dir, "audit.jsonl")
    keyf = os.path.join(bus.dir, "broker.key")
    with open(keyf, "w") as f:
        f.write("main:test-secret-0123456789-abcdefghij\n")
    os.chmod(keyf, 0o600)
    bus.write_conf(open(bus.conf).read() + "[plugin tokens]\nkey_file = %s\npeercred_uids = self\n"
                   "[plugin audit]\nfile = %s\nchain = yes\npayloads = yes\n" % (keyf, path))
    bus.start()
    with bus:
        ops = bus.client("ops")
        r = ops.call("lexbus", "token.issue", {"target": "spark", "operation": "*", "ttl": 60})
        check_eq(r["status"], "success", "issue: %r" % r)
        tok, jti = r["data"]["token"], r["data"]["jti"]
        check_eq(ops.call("lexbus", "token.verify", {"token": tok})["status"], "success", "verify")
        check_eq(ops.call("lexbus", "token.revoke", {"jti": jti})["status"], "success", "revoke")
        check_eq(ops.call("lexbus", "token.verify", {"token": tok})["error"]["code"], "UNAUTHENTICATED", "revoked")
        # Refused by the router before the system service sees it: still no token in the file.
        r = ops.call("lexbus", "token.verify", {"token": tok}, context={"deadline": 1000})
        check_eq(r["error"]["code"], "DEADLINE_EXCEEDED", "a passed deadline")
        check_eq(ops.call("lexbus", "stats")["status"], "success", "stats")
        bus.stop()
        raw = open(path, "rb").read()
        recs = [json.loads(l) for l in read_lines(path)]
    check_eq(kinds(recs), [("REGISTER", "ops", "ok"), ("CALL", "token.issue", "ok"), ("CALL", "token.verify", "ok"),
                           ("CALL", "token.revoke", "ok"), ("CALL", "token.verify", "UNAUTHENTICATED"),
                           ("CALL", "token.verify", "DEADLINE_EXCEEDED"), ("CALL", "stats", "ok")],
             "system calls recorded")
    check(all(r["to"] == "lexbus" and r["from"] == "ops" for r in recs[1:]), "to the system service, from the caller")
    check(tok.encode() not in raw and tok.split(".")[2].encode() not in raw, "the token never reaches the audit file")


@test
def stats_shutdown_log_and_verify_agree_on_the_last_hash():
    bus, path = audit_bus()
    with bus:
        c = bus.client("probe")
        last_hash = c.call("lexbus", "stats")["data"]["plugins"]["audit"]["lastHash"]
        check_eq(bus.stop(), 0, "exit")
        lines = read_lines(path)
        final = sha(lines[-1])
        # stats answers before its own line is written: that line's prev.
        rec = json.loads(lines[-1])
        check_eq((rec["name"], rec["prev"]), ("stats", last_hash), "the stats call's own line")
        check_eq(sha(lines[-2]), last_hash, "lastHash is the hash of the line before")
        check("audit chain of %s ends at %s" % (path, final) in bus.logtext(), "shutdown log:\n" + bus.logtext()[-2000:])
        r = bus.cli("audit", "verify", path)
        check_eq((r.returncode, json.loads(r.stdout)["last"]), (0, final), "verify prints the last hash")
        # An edit of the last line: no later prev covers it, but "last" no longer matches the log.
        with open(path, "wb") as f:
            f.write(b"\n".join(lines[:-1] + [lines[-1].replace(b'"ok"', b'"OK"')]) + b"\n")
        r = bus.cli("audit", "verify", path)
        check(r.returncode == 0 and json.loads(r.stdout)["last"] != final, "an edited tail changes last: %r" % (r,))


@test
def dropped_lines_leave_a_marker_in_the_chain():
    bus = Bus(start=False)
    path = os.path.join(bus.dir, "audit.fifo")
    os.mkfifo(path)
    # Nobody reads the FIFO at first: the pipe, then the 64K buffer fill up.
    rfd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    data = bytearray()

    def drain():
        while True:
            try:
                chunk = os.read(rfd, 1 << 16)
            except BlockingIOError:
                return
            if not chunk:
                return
            data.extend(chunk)

    bus.write_conf(open(bus.conf).read() + "[plugin audit]\nfile = %s\nchain = yes\nbuffer = 64K\n" % path)
    bus.start()
    try:
        with bus:
            a = bus.client("flood")
            for i in range(3000):
                a.send({"type": "EMIT", "event": "flood:e", "payload": {"i": i}})
            check_eq(a.call("lexbus", "ping")["status"], "success", "every EMIT handled")
            check(a.call("lexbus", "stats")["data"]["plugins"]["audit"]["dropped"] > 0, "lines were dropped")
            after = [0]

            def caught_up():
                drain()
                if b"flood:after" in data:
                    return True
                after[0] += 1
                a.send({"type": "EMIT", "event": "flood:after"})
                return False
            lbtest.wait_for(caught_up, timeout=10, what="the writer to catch up")
            time.sleep(0.2)
            drain()
            dropped = a.call("lexbus", "stats")["data"]["plugins"]["audit"]["dropped"]
            drain()
            check_eq(bus.stop(), 0, "exit")
            drain()
    finally:
        os.close(rfd)
    lines = [l for l in bytes(data).split(b"\n") if l]
    recs = [json.loads(l) for l in lines]
    check_eq(verify_chain(lines), -1, "the chain holds across the gap")
    marks = [i for i, r in enumerate(recs) if r["type"] == "DROPPED"]
    check(marks, "a DROPPED line in the file")
    check_eq(sum(recs[i]["count"] for i in marks), dropped, "the DROPPED lines account for every dropped line")
    check(marks[0] < [i for i, r in enumerate(recs) if r.get("name") == "flood:after"][0], "the gap is marked where it is")
    check(all(recs[i]["since"] <= recs[i]["time"] for i in marks), "since <= time")
    # register + 3000 EMITs + ping + stats + the EMITs sent while catching up + stats
    operations = 1 + 3000 + 1 + 1 + after[0] + 1
    check_eq(len(recs) - len(marks) + dropped, operations, "recorded + dropped = every operation")


@test
def sighup_reopens_even_when_bus_conf_cannot_be_read():
    bus, path = audit_bus()
    with bus:
        bus.client("one")
        lbtest.wait_for(lambda: os.path.exists(path) and os.path.getsize(path) > 0, what="first line written")
        os.rename(path, path + ".1")                 # logrotate
        good = open(bus.conf).read()
        bus.write_conf(good.replace("[bus]\n", "[bus]\nno_such_key = 1\n"))
        bus.send_signal(signal.SIGHUP)
        lbtest.wait_for(lambda: "reload failed" in bus.logtext(), what="the failed reload")
        bus.client("two")
        lbtest.wait_for(lambda: os.path.exists(path) and os.path.getsize(path) > 0,
                        what="a new file although bus.conf was bad")
        bus.write_conf(good)
        bus.stop()
        old, new = read_lines(path + ".1"), read_lines(path)
        check_eq([json.loads(l)["name"] for l in new], ["two"], "the new file")
        check_eq(verify_chain(old + new), -1, "chain continues across the rotation")


@test
def sighup_reopens_and_restart_continues_the_chain():
    bus, path = audit_bus()
    with bus:
        bus.client("one")
        lbtest.wait_for(lambda: os.path.exists(path) and os.path.getsize(path) > 0, what="first line written")
        os.rename(path, path + ".1")                 # logrotate
        bus.send_signal(signal.SIGHUP)
        lbtest.wait_for(lambda: "configuration reloaded" in bus.logtext(), what="reload")
        bus.client("two")
        lbtest.wait_for(lambda: os.path.exists(path) and os.path.getsize(path) > 0, what="new file")
        bus.stop()
        old, new = read_lines(path + ".1"), read_lines(path)
        check_eq(verify_chain(old + new), -1, "chain continues across the rotation")
        r = bus.cli("audit", "verify", path + ".1", path)
        check_eq((r.returncode, json.loads(r.stdout)), (0, {"ok": True, "lines": len(old) + len(new), "files": 2,
                                                             "last": sha(new[-1])}),
                 "lexbus audit verify across the rotated files")
        r = bus.cli("audit", "verify", path)
        check(r.returncode == 1 and "line 1 of" in r.stderr, "the newer file alone starts mid-chain: %r" % (r,))
        r = bus.cli("audit", "verify", "--partial", path)
        check_eq((r.returncode, json.loads(r.stdout)["lines"]), (0, len(new)), "--partial trusts the first prev")
        r = bus.cli("audit", "verify", path, path + ".1")
        check(r.returncode == 1 and "CHAIN_BROKEN" in r.stderr, "files in the wrong order: %r" % (r,))
        with open(path, "ab") as f:
            f.write(b'{"cut":')                      # an interrupted write
        r = bus.cli("audit", "verify", path + ".1", path)
        check(r.returncode == 1 and "cut off" in r.stderr, "a cut-off last line: %r" % (r,))
        with open(path, "wb") as f:
            f.write(b"\n".join(new) + b"\n")
        bus.start()
        bus.client("three")
        bus.stop()
        check_eq(verify_chain(old + read_lines(path)), -1, "chain continues across a restart")
        check(any(json.loads(l)["name"] == "three" for l in read_lines(path)), "after restart")



def parses(raw):
    try:
        json.loads(raw)
        return True
    except ValueError:
        return False


def check_cut_then_fresh_lines(bus, path, lost):
    """The file holds exactly one cut line, standing alone (later records did
    not run into it), followed by a LOST line when the bus knows lines were
    lost; `lexbus audit verify` names the cut line and `--partial` verifies
    everything else across it.  Returns the chained records and the cut line."""
    data = open(path, "rb").read()
    check(data.endswith(b"\n"), "the file ends with a complete line")
    lines = data[:-1].split(b"\n")
    bad = [i for i, l in enumerate(lines) if not parses(l)]
    check_eq(len(bad), 1, "lines that are not JSON: %r" % [lines[i][:80] for i in bad])
    cut = lines[bad[0]]
    check(cut.startswith(b'{"time":') and cut.count(b'{"time":') == 1,
          "the cut line holds one record's start and nothing appended: %r" % cut[-120:])
    marks = [i for i, l in enumerate(lines) if parses(l) and json.loads(l).get("type") == "LOST"]
    if lost:
        check(bad[0] + 1 in marks, "a LOST line right after the cut: %r" % lines[bad[0] + 1][:120])
        check(all(json.loads(lines[i])["lines"] >= 1 and "prev" not in json.loads(lines[i]) for i in marks),
              "LOST lines count the lines and are not chained")
    else:
        check_eq(marks, [], "no LOST line: nothing the bus knows of was lost")
    r = bus.cli("audit", "verify", path)
    check(r.returncode == 1 and "line %d of %s" % (bad[0] + 1, path) in r.stderr and "cut off" in r.stderr,
          "a strict verify stops at the cut line: %r" % (r,))
    r = bus.cli("audit", "verify", "--partial", path)
    check_eq(r.returncode, 0, "--partial resynchronises after the cut line: %r" % (r,))
    out = json.loads(r.stdout)
    recs = [json.loads(l) for i, l in enumerate(lines) if i not in bad and i not in marks]
    check_eq((out["ok"], out["lines"], out["cut"], out["resumed"]), (True, len(recs), 1, len(marks)),
             "what --partial verified (each LOST gap starts the chain again): %r" % (out,))
    check_eq(out["lost"], sum(json.loads(lines[i])["lines"] for i in marks), "lost lines counted")
    check("line %d of %s is cut off" % (bad[0] + 1, path) in r.stderr, "and names the cut line: %r" % r.stderr)
    check_eq(verify_chain([l for i, l in enumerate(lines) if i > max([bad[0]] + marks)],
                          json.loads(lines[max([bad[0]] + marks) + 1])["prev"]), -1, "the records after the gap chain")
    return recs, cut


def mount_tmpfs(path, size):
    """A small file system that fills up: a tmpfs (needs root)."""
    if os.geteuid() != 0:
        raise lbtest.Skip("mounting a small tmpfs (a disk that fills up) needs root")
    os.makedirs(path)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%d" % size, "lexbus-test", path],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise lbtest.Skip("cannot mount a tmpfs: %s" % r.stderr.strip())


@test
def a_full_disk_cuts_a_line_and_later_records_start_on_a_fresh_one():
    """A write cut off by a full disk leaves a partial line whose newline
    cannot be written either; once there is room the next record must still
    start on its own line, so the rest of the file can be verified."""
    bus = Bus(start=False)
    fs = os.path.join(bus.dir, "fs")
    mount_tmpfs(fs, 64 * 1024)
    try:
        path, filler = os.path.join(fs, "audit.jsonl"), os.path.join(fs, "filler")
        with open(filler, "wb") as f:
            f.write(b"\0" * (56 * 1024))            # 8K left for the audit file
        bus.write_conf(open(bus.conf).read() + "[plugin audit]\nfile = %s\nchain = yes\n" % path)
        bus.start()
        with bus:
            c = bus.client("writer")
            seq = iter(range(100000))

            def emit(prefix):
                eid = "%s-%d" % (prefix, next(seq))
                c.send({"type": "EMIT", "event": "fill", "payload": 1, "ack": True, "id": eid})
                c.recv_type("ACK")
                return eid

            def audit():
                return bus.stats()["plugins"]["audit"]

            # Until a write fails mid-line: a page boundary can fall between
            # two lines by chance, then a freed page lets the file grow on.
            for _ in range(8):
                errors = audit()["writeErrors"]
                while audit()["writeErrors"] == errors:
                    emit("fill")
                if not open(path, "rb").read().endswith(b"\n"):
                    break
                os.truncate(filler, os.path.getsize(filler) - 4096)
            check(not open(path, "rb").read().endswith(b"\n"), "a write was cut mid-line")
            errors = audit()["writeErrors"]
            emit("lost")                                 # the disk is still full: lost, counted
            lbtest.wait_for(lambda: audit()["writeErrors"] > errors, what="another failed write")
            os.unlink(filler)                            # room again
            after = [emit("after") for _ in range(5)]
            lbtest.wait_for(lambda: after[-1].encode() in open(path, "rb").read(), what="records after the cut")
            check(audit()["linesLost"] >= 1, "lost lines counted")
            check_eq(bus.stop(), 0, "stopped")
            recs, _ = check_cut_then_fresh_lines(bus, path, lost=True)
            ids = [r.get("id") for r in recs]
            check(all(a in ids for a in after), "every record written after the cut is a line of its own: %r" % ids[-12:])
            check("cannot write %s" % path in bus.logtext(), "the failure is logged")
    finally:
        subprocess.run(["umount", fs])


@test
def a_restart_after_a_crash_mid_line_starts_a_fresh_line():
    """A crash in the middle of a write leaves the file ending without a
    newline: the restarted bus ends that line first, and continues the chain
    from the last complete line, so nothing but the cut record is lost."""
    bus, path = audit_bus()
    with bus:
        bus.client("one")
        bus.client("two")
        lbtest.wait_for(lambda: b'"two"' in open(path, "rb").read(), what="lines written")
        bus.proc.kill()
        bus.proc.wait()
        data = open(path, "rb").read()
        with open(path, "wb") as f:
            f.write(data[:-25])                         # the last record cut, as a crash mid-write leaves it
        bus.start()
        bus.client("three")
        check_eq(bus.stop(), 0, "stopped")
        recs, cut = check_cut_then_fresh_lines(bus, path, lost=False)
        check(b'"name":"two"' in cut, "the cut record is the last one before the crash: %r" % cut)
        check_eq([r["name"] for r in recs if r["type"] == "REGISTER"], ["one", "three"],
                 "the record before the cut, and the first one after the restart, are lines of their own")
        check("%s ends with a cut line" % path in bus.logtext(), "the restart says so: %s" % bus.logtext()[-2000:])


@test
def a_failing_disk_is_counted_and_reported():
    """/dev/full fails every write with ENOSPC: the bus keeps serving, counts
    the lines that never reached the file, and says so in its log."""
    bus = Bus(start=False)
    bus.write_conf(open(bus.conf).read() + "[plugin audit]\nfile = /dev/full\nchain = yes\n")
    bus.start()
    with bus:
        c = bus.client("writer")
        for i in range(5):
            c.send({"type": "EMIT", "event": "e%d" % i, "payload": i, "ack": True, "id": "e%d" % i})
            c.recv_type("ACK")
        lbtest.wait_for(lambda: bus.stats()["plugins"]["audit"]["linesLost"] >= 1, what="lost lines counted")
        c.send({"type": "EMIT", "event": "after", "payload": 1, "ack": True, "id": "after"})
        c.recv_type("ACK")
        st = bus.stats()["plugins"]["audit"]
        check(st["writeErrors"] >= 1, "write errors counted: %r" % st)
        lbtest.wait_for(lambda: "cannot write /dev/full" in bus.logtext(), what="the failure logged")

lbtest.main()
