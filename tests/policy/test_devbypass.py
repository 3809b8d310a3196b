"""dev-bypass and the production-mode security default, through the real daemon."""
import os
import subprocess

import lbtest
from lbtest import Bus, check, check_eq, test, LEXBUSD


def start_fails(bus_lines, plugins):
    bus = Bus(bus=bus_lines, plugins=plugins, start=False)
    try:
        p = subprocess.run([LEXBUSD, "-c", bus.conf], capture_output=True, text=True, timeout=20)
        return p.returncode, p.stderr, bus.conf
    finally:
        bus.__exit__(None, None, None)


@test
def production_without_authenticator_refuses_to_start():
    rc, err, conf = start_fails("mode = production\n", "")
    check_eq(rc, 1, "exit code")
    check("mode = production needs an authenticating plugin" in err, err)


@test
def dev_bypass_refuses_production_with_file_and_line():
    rc, err, conf = start_fails("mode = production\n", "[plugin dev-bypass]\n")
    check_eq(rc, 1, "exit code")
    check("%s:" % conf in err and "[plugin dev-bypass]" in err, err)
    check("must not be loaded in mode = production" in err, err)


@test
def dev_bypass_accepts_uncredentialed_register_and_shows_it():
    with Bus(plugins="[plugin dev-bypass]\n") as bus:
        check("DEVELOPMENT BYPASS ACTIVE" in bus.logtext(), "no loud start-up line")
        a = bus.client("dev-svc", methods=["m"])
        b = bus.raw()
        ack = b.register("other-svc")
        check_eq(ack.get("auth"), "bypass", "REGISTER_ACK auth")
        r = a.call("lexbus", "services")
        svc = [s for s in r["data"] if s["name"] == "dev-svc"][0]
        check_eq(svc["sessions"][0]["auth"], "bypass", "services auth")
        st = a.call("lexbus", "stats")["data"]
        check_eq(st["plugins"]["dev-bypass"]["bypassedSessions"], 2, "bypassedSessions")
        check_eq(st["plugins"]["dev-bypass"]["activeBypassed"], 2, "activeBypassed")
        b.close()
        lbtest.wait_for(lambda: a.call("lexbus", "stats")["data"]["plugins"]["dev-bypass"]["activeBypassed"] == 1,
                        what="activeBypassed to drop")


BYPASS_CLAIMS = {"type": "bypass", "bypass": True, "development": True}


def tokens_bus(bus_lines="", plugins_before="", plugins_after=""):
    """A bus with [plugin tokens] (unix clients of our uid register without a token)."""
    bus = Bus(bus=bus_lines, start=False)
    keyf = os.path.join(bus.dir, "broker.key")
    with open(keyf, "w") as f:
        f.write("main:test-secret-0123456789-abcdefghij\n")
    os.chmod(keyf, 0o600)
    bus.write_conf(open(bus.conf).read() + plugins_before +
                   "[plugin tokens]\nkey_file = %s\npeercred_uids = self\n" % keyf + plugins_after)
    bus.start()
    return bus


def marked_call(caller, token="true", mark=True, cid="ipc-1", method="m"):
    # Exprsn marks IPC requests with x-ipc-request: true and a placeholder x-broker-token: true.
    msg = {"type": "CALL", "id": cid, "to": "svc", "method": method, "params": {}, "token": token}
    if mark is not None:
        msg["ipcRequest"] = mark
    caller.send(msg)


@test
def ipc_request_skips_token_checks_in_development():
    # tokens is before dev-bypass: the order of the sections does not matter.
    with tokens_bus(plugins_after="[plugin dev-bypass]\n") as bus:
        svc = bus.client("svc", methods=["m"], subscribe=["ev:*"])
        caller = bus.client("caller")
        marked_call(caller)
        got = svc.recv()
        check_eq((got["type"], got["id"], got["token"]), ("CALL", "ipc-1", BYPASS_CLAIMS),
                 "the callee is told the token was not checked")
        svc.send({"type": "RESPONSE", "id": "ipc-1", "status": "success", "data": "done"})
        check_eq(caller.recv()["data"], "done", "marked call answered")
        # Not marked (or marked with anything but true): the token is checked as always.
        for cid, mark in (("plain", None), ("string", "true"), ("false", False)):
            marked_call(caller, mark=mark, cid=cid)
            r = caller.recv()
            check_eq((r["id"], r["error"]["code"]), (cid, "UNAUTHENTICATED"), "ipcRequest=%r" % (mark,))
        # A marked call without any token is counted too.
        caller.send({"type": "CALL", "id": "ipc-2", "to": "svc", "method": "m", "ipcRequest": True})
        check("token" not in svc.recv(), "no token invented for a call that had none")
        svc.send({"type": "RESPONSE", "id": "ipc-2", "status": "success", "data": 2})
        check_eq(caller.recv()["data"], 2, "marked call without a token answered")
        # EMIT.
        caller.send({"type": "EMIT", "id": "ev-1", "event": "ev:x", "payload": 1, "token": "true",
                     "ipcRequest": True, "ack": True})
        check_eq(caller.recv_type("ACK")["delivered"], 1, "marked EMIT delivered")
        check_eq(svc.recv_type("EVENT")["token"], BYPASS_CLAIMS, "event token")
        caller.send({"type": "EMIT", "id": "ev-2", "event": "ev:x", "payload": 1, "token": "true"})
        check_eq(caller.recv()["error"]["code"], "UNAUTHENTICATED", "unmarked EMIT with a bad token")
        st = caller.call("lexbus", "stats")["data"]["plugins"]["dev-bypass"]
        check_eq(st["ipcRequests"], 3, "ipcRequests counted")
        # Calls to the bus's own service count too.
        check_eq(caller.call("lexbus", "ping", ipcRequest=True)["status"], "success", "system call, marked")
        check_eq(caller.call("lexbus", "stats")["data"]["plugins"]["dev-bypass"]["ipcRequests"], 4, "counted")
        check("ipcRequest" in bus.logtext(), "the start-up line names the IPC bypass")


@test
def ipc_request_mark_has_no_effect_without_dev_bypass_or_in_production():
    for bus_lines in ("", "mode = production\nstate_file = lexbus-state.json\n"):
        with tokens_bus(bus_lines=bus_lines) as bus:
            bus.client("svc", methods=["m"], subscribe=["ev:*"])
            caller = bus.client("caller")
            marked_call(caller)
            r = caller.recv()
            check_eq((r["id"], r["error"]["code"]), ("ipc-1", "UNAUTHENTICATED"), "marked CALL, %r" % bus_lines)
            caller.send({"type": "EMIT", "event": "ev:x", "token": "true", "ipcRequest": True})
            check_eq(caller.recv()["error"]["code"], "UNAUTHENTICATED", "marked EMIT, %r" % bus_lines)
            check("dev-bypass" not in caller.call("lexbus", "stats")["data"]["plugins"], "no dev-bypass stats")


@test
def without_dev_bypass_sessions_are_not_marked():
    with Bus() as bus:
        c = bus.raw()
        check_eq(c.register("plain").get("auth"), "none", "auth")


@test
def unix_uid_allow_list():
    bus = Bus(start=False)
    bus.write_conf(open(bus.conf).read().replace("[plugin unix]\n", "[plugin unix]\nallow_uids = 54321\n"))
    bus.start()
    with bus:
        c = bus.raw()
        try:
            c.send({"type": "REGISTER", "serviceName": "outsider"})
            got = c.expect_closed()
        except (BrokenPipeError, ConnectionResetError):
            got = []   # closed at accept, before our REGISTER got through
        check_eq(got, [], "an unlisted uid is closed without being served")
        check("not in allow_uids/allow_gids" in bus.logtext(), "refusal logged")
    bus = Bus(start=False)
    bus.write_conf(open(bus.conf).read().replace("[plugin unix]\n", "[plugin unix]\nallow_uids = self\n"))
    bus.start()
    with bus:
        check_eq(bus.raw().register("insider")["type"], "REGISTER_ACK", "our own uid is allowed")


lbtest.main()
