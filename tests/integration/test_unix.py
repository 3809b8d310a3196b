"""The unix transport's settings through the real daemon: SIGHUP applies
`mode` (the socket is chmod-ed) and `allow_uids`/`allow_gids` (new
connections are checked against the new lists, open ones from peers no
longer allowed are closed with FORBIDDEN); a reload it cannot apply (a new
`path`, a bad value) keeps every old setting and says why."""
import os
import stat

import lbtest
from lbtest import Bus, Closed, check, check_eq, test

NOBODY = 54321   # a uid no test runs as


def sock_mode(bus):
    return oct(stat.S_IMODE(os.stat(bus.sock).st_mode))


def shut_out(bus):
    """True if a new connection is closed without being served."""
    c = bus.raw()
    try:
        c.send({"type": "REGISTER", "serviceName": "outsider"})
        return c.expect_closed() == []
    except (BrokenPipeError, ConnectionResetError, Closed):
        return True   # closed at accept, before our REGISTER got through


def unix_conf(bus, lines):
    return open(bus.conf).read().replace("[plugin unix]\n", "[plugin unix]\n" + lines)


@test
def sighup_applies_mode_and_allow_uids():
    bus = Bus(start=False)
    base = open(bus.conf).read()
    bus.write_conf(unix_conf(bus, "allow_uids = self\n"))
    with bus.start():
        check_eq(sock_mode(bus), oct(0o660), "default mode")
        insider = bus.client("insider")
        log = bus.reload(base.replace("[plugin unix]\n", "[plugin unix]\nmode = 0600\nallow_uids = %d\n" % NOBODY))
        check("reload failed" not in log, log)
        check_eq(sock_mode(bus), oct(0o600), "the new mode is applied to the socket")
        got = insider.expect_closed(timeout=3)
        check(got and got[-1]["type"] == "ERROR" and got[-1]["error"]["code"] == "FORBIDDEN"
              and "allow_uids" in got[-1]["error"]["message"], "an open connection no longer allowed is closed: %r" % got)
        check(shut_out(bus), "new connections are checked against the new allow_uids")
        check("closed 1 connection" in bus.logtext(), "the closes are logged")

        log = bus.reload(base.replace("[plugin unix]\n", "[plugin unix]\nmode = 0640\nallow_gids = %d\n" % os.getgid()))
        check_eq(sock_mode(bus), oct(0o640), "mode again")
        check_eq(bus.raw().register("by-group")["type"], "REGISTER_ACK", "allowed by allow_gids")
        log = bus.reload(base)
        check_eq(bus.raw().register("anyone")["type"], "REGISTER_ACK", "no lists: anyone who can open the socket")
        keep = bus.client("keep")

        # Not applicable: nothing changes, and the log says which key and why.
        bad_mode = base.replace("[plugin unix]\n", "[plugin unix]\nmode = 0999\nallow_uids = %d\n" % NOBODY)
        new_path = base.replace("path = %s\n" % bus.sock, "path = %s.new\nmode = 0600\nallow_uids = %d\n" % (bus.sock, NOBODY))
        for conf, why in ((bad_mode, "'0999' is not an octal file mode"),
                          (new_path, "path changed to %s.new: the socket moves only on restart" % bus.sock)):
            log = bus.reload(conf)
            check("[plugin unix] reload failed" in log and why in log, "refused, with the reason: %s" % log)
            check_eq(sock_mode(bus), oct(0o660), "mode kept")
            check_eq(keep.call("lexbus", "ping")["status"], "success", "open connections kept")
            check_eq(bus.raw().register("still-anyone")["type"], "REGISTER_ACK", "allow_uids not applied")


lbtest.main()
