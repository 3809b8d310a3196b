"""dev-bypass and the production-mode security default, through the real daemon."""
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
        c.send({"type": "REGISTER", "serviceName": "outsider"})
        got = c.expect_closed()
        check_eq(got, [], "an unlisted uid is closed without being served")
        check("not in allow_uids/allow_gids" in bus.logtext(), "refusal logged")
    bus = Bus(start=False)
    bus.write_conf(open(bus.conf).read().replace("[plugin unix]\n", "[plugin unix]\nallow_uids = self\n"))
    bus.start()
    with bus:
        check_eq(bus.raw().register("insider")["type"], "REGISTER_ACK", "our own uid is allowed")


lbtest.main()
