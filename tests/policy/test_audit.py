"""audit through the real daemon: every operation recorded, hash chain verified."""
import hashlib
import json
import os
import signal

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


@test
def every_operation_is_recorded_and_the_chain_verifies():
    bus, path = audit_bus()
    with bus:
        scenario(bus)
        check_eq(bus.stop(), 0, "exit")
        lines = read_lines(path)
        recs = [json.loads(l) for l in lines]
        kinds = [(r["type"], r["name"], r["outcome"]) for r in recs]
        for want in (("REGISTER", "svc-a", "ok"), ("REGISTER", "svc-b", "ok"), ("CALL", "echo", "ok"),
                     ("CALL", "x", "SERVICE_NOT_FOUND"), ("EMIT", "news:today", "ok"), ("EMIT", "x", "SERVICE_NOT_FOUND")):
            check(want in kinds, "missing %r in %r" % (want, kinds))
        call = [r for r in recs if r["type"] == "CALL" and r["outcome"] == "ok"][0]
        check_eq((call["from"], call["to"], call["id"], call["delivered"]), ("svc-b", "svc-a", "c-ok", 1), "call record")
        check(call["durationUs"] > 0 and call["bytes"] > 0, "duration and bytes")
        emit = [r for r in recs if r["name"] == "news:today"][0]
        check_eq(emit["delivered"], 1, "delivered count")
        check(all(r["node"] == "test-node" and r["time"] > 0 for r in recs), "time and node")
        check(not any("params" in r or "payload" in r for r in recs), "no payloads unless configured")
        check_eq(verify_chain(lines), -1, "chain verifies")
        r = bus.cli("audit", "verify", path)
        check_eq((r.returncode, json.loads(r.stdout)), (0, {"ok": True, "lines": len(lines), "files": 1}), "lexbus audit verify")
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
def payloads_when_configured():
    bus, path = audit_bus("payloads = yes\n")
    with bus:
        scenario(bus)
        bus.stop()
        recs = [json.loads(l) for l in read_lines(path)]
    # A completed call is recorded when its RESPONSE arrives: with its data.
    call = [r for r in recs if r["type"] == "CALL" and r["id"] == "c-ok"][0]
    check_eq(call["data"], 1, "response data recorded")
    check_eq([r for r in recs if r["name"] == "news:today"][0]["payload"], {"p": 1}, "payload recorded")


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
        check_eq((r.returncode, json.loads(r.stdout)), (0, {"ok": True, "lines": len(old) + len(new), "files": 2}),
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


lbtest.main()
