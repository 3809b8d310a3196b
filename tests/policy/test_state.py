"""[bus] state_file: the host's key-value state (used by tokens) across restarts."""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

import lbtest
from lbtest import Bus, check, check_eq, test

from tokenutil import SECRET, claims, mint


def token_bus_conf():
    """A production bus.conf with [plugin tokens] and [bus] state_file (not started)."""
    bus = Bus(bus="mode = production\nstate_file = lexbus-state.json\n", start=False)
    keyf = os.path.join(bus.dir, "broker.key")
    with open(keyf, "w") as f:
        f.write("main:%s\n" % SECRET)
    os.chmod(keyf, 0o600)
    bus.write_conf(open(bus.conf).read() + "[plugin tokens]\nkey_file = %s\nadmins = admin\n" % keyf)
    return bus


def admin(bus):
    c = bus.raw()
    check_eq(c.register("admin", token=mint(claims("admin", admin=True)))["type"], "REGISTER_ACK", "admin bootstrap")
    return c


def issue(a, **params):
    r = a.call("lexbus", "token.issue", params)
    check_eq(r["status"], "success", "issue: %r" % r)
    return r["data"]


def refused(bus, token, name):
    c = bus.raw()
    r = c.register(name, token=token)
    c.close()
    return r["error"]["code"] + ": " + r["error"]["message"] if r["type"] == "ERROR" else None

# ----

STATE = "lexbus-state.json"


def state_path(bus):
    return os.path.join(bus.dir, STATE)


def read_state(bus):
    lines = open(state_path(bus)).read().splitlines()
    return json.loads(lines[0]), [json.loads(l) for l in lines[1:]]


def write_state(bus, entries, header=None):
    with open(state_path(bus), "w") as f:
        f.write(json.dumps(header or {"lexbus-state": 1}) + "\n")
        for e in entries:
            f.write(json.dumps(e) + "\n")


def start_fails(bus):
    """lexbusd -t and a real start both refuse: returns their stderr."""
    t = subprocess.run([lbtest.LEXBUSD, "-t", "-c", bus.conf], capture_output=True, text=True, timeout=30)
    r = subprocess.run([lbtest.LEXBUSD, "-c", bus.conf], capture_output=True, text=True, timeout=30)
    check(t.returncode == 1 and r.returncode == 1, "both refuse: %d %d %s" % (t.returncode, r.returncode, r.stderr))
    return t.stderr, r.stderr


@test
def entries_keep_their_absolute_expiry_and_expired_ones_are_dropped_on_load():
    bus = token_bus_conf()
    try:
        bus.start()
        a = admin(bus)
        t = issue(a, target="x", operation="y", source="gone")
        keep = issue(a, target="x", operation="y", source="keeper")
        a.call("lexbus", "token.revoke", {"jti": t["jti"]})
        a.call("lexbus", "token.state.set", {"jti": keep["jti"], "state": {"step": 1, "s": "\u00e9"}})
        check_eq(bus.stop(), 0, "stopped")
        header, entries = read_state(bus)
        check_eq(header, {"lexbus-state": 1}, "header")
        rev = [e for e in entries if e["k"] == "revoked/" + t["jti"]]
        check(len(rev) == 1 and rev[0]["p"] == "tokens", "the revocation is a tokens entry: %r" % entries)
        # max_ttl (24h) + the iat skew: the revocation outlives every token it could match.
        left = rev[0]["e"] / 1000 - time.time()
        check(86400 + 25 < left < 86400 + 35, "expiry is absolute, about max_ttl + 31 s away: %r" % left)
        now_ms = int(time.time() * 1000)
        entries += [{"p": "tokens", "k": "revoked/J-old", "e": now_ms - 1000, "v": ""},
                    {"p": "tokens", "k": "revoked/J-new", "e": now_ms + 600000, "v": ""},
                    {"p": "tokens", "k": "state/J-old", "e": now_ms - 1, "v": "{\"stale\":true}"},
                    {"p": "tokens", "k": "state/J-hex", "x": "7b2261223a317d"}]
        write_state(bus, entries)
        bus.start()
        check("4 entries loaded from %s (2 expired, dropped)" % state_path(bus) in bus.logtext(), bus.logtext())
        a = admin(bus)
        check(refused(bus, mint(claims("old", jti="J-old")), "old") is None, "an expired revocation is gone")
        check("revoked" in (refused(bus, mint(claims("new", jti="J-new")), "new") or ""), "an unexpired one holds")
        check("revoked" in (refused(bus, t["token"], "gone") or ""), "the revoke survived the restart")
        get = lambda j: a.call("lexbus", "token.state.get", {"jti": j})["data"]["state"]
        check_eq(get(keep["jti"]), {"step": 1, "s": "\u00e9"}, "state kept, bytes exact")
        check_eq(get("J-old"), None, "expired state is never returned")
        check_eq(get("J-hex"), {"a": 1}, "a hex-encoded value")
        a.call("lexbus", "token.state.delete", {"jti": "J-hex"})
        check_eq(bus.stop(), 0, "stopped")
        _, entries = read_state(bus)
        keys = {e["k"]: e for e in entries}
        check("revoked/J-old" not in keys and "state/J-old" not in keys and "state/J-hex" not in keys,
              "dropped and deleted entries are not written back: %r" % sorted(keys))
        check_eq(keys["revoked/" + t["jti"]]["e"], rev[0]["e"], "a restart does not extend an expiry")
        check_eq(oct(os.stat(state_path(bus)).st_mode & 0o777), oct(0o600), "state file mode")
    finally:
        bus.__exit__(None, None, None)


@test
def coalesced_changes_reach_the_disk_without_a_clean_stop():
    bus = token_bus_conf()
    try:
        bus.start()
        a = admin(bus)
        for i in range(20):
            a.call("lexbus", "token.state.set", {"jti": "J-%d" % i, "state": i})
        time.sleep(0.6)   # written within ~100 ms by the writer thread
        bus.proc.kill()
        bus.proc.wait()
        bus.start()
        a = admin(bus)
        check_eq([a.call("lexbus", "token.state.get", {"jti": "J-%d" % i})["data"]["state"] for i in range(20)],
                 list(range(20)), "every change survived SIGKILL")
    finally:
        bus.__exit__(None, None, None)


@test
def a_corrupt_or_unreadable_state_file_stops_start_up():
    bus = token_bus_conf()
    try:
        path = state_path(bus)
        cases = {
            "%s:2: state_file is corrupt" % path: '{"lexbus-state":1}\nnot json\n',
            "%s:3: state_file is corrupt (\"e\" must be an integer" % path:
                '{"lexbus-state":1}\n{"p":"tokens","k":"a","v":""}\n{"p":"tokens","k":"b","e":"soon","v":""}\n',
            "%s:1: state_file is corrupt (this is the state file of an older [plugin tokens]" % path:
                '{"revoked":{},"state":{}}\n',
            "%s:1: state_file is corrupt (line 1 is not the" % path: '{"lexbus":1}\n',
            "%s: state_file is empty" % path: "",
        }
        for want, text in cases.items():
            with open(path, "w") as f:
                f.write(text)
            for err in start_fails(bus):
                check(want in err and ("move it away" in err or "remove it" in err), "%s: %s" % (want, err))
        os.unlink(path)
        os.mkdir(path)
        for err in start_fails(bus):
            check("cannot read state_file %s" % path in err, err)
        os.rmdir(path)
    finally:
        bus.__exit__(None, None, None)


@test
def two_daemons_cannot_share_a_state_file():
    """The second lexbusd on the same state_file exits 1 naming the file and the
    holder's pid; the first keeps serving and writing; the lock dies with its holder."""
    bus = token_bus_conf()
    d2 = tempfile.mkdtemp(prefix="lexbus-test-")
    try:
        bus.start()
        conf2 = os.path.join(d2, "bus.conf")
        sock2 = os.path.join(d2, "bus.sock")
        with open(conf2, "w") as f:   # its own socket, the first one's state_file (absolute path)
            f.write(open(bus.conf).read().replace(bus.sock, sock2)
                    .replace("state_file = %s" % STATE, "state_file = %s" % state_path(bus)))
        p = subprocess.run([lbtest.LEXBUSD, "-c", conf2], capture_output=True, text=True, timeout=30)
        check_eq(p.returncode, 1, "the second daemon refuses to start: %s" % p.stderr)
        want = "state_file %s is in use by another lexbusd (pid %d" % (state_path(bus), bus.proc.pid)
        check(want in p.stderr, "want %r in %r" % (want, p.stderr))
        check(not os.path.exists(sock2), "it opened no socket")
        t = subprocess.run([lbtest.LEXBUSD, "-t", "-c", conf2], capture_output=True, text=True, timeout=30)
        check_eq(t.returncode, 0, "-t still checks the file of a running bus: %s" % t.stderr)
        check("in use by lexbusd pid %d" % bus.proc.pid in t.stderr, "and says who holds it: %r" % t.stderr)
        a = admin(bus)
        tok = issue(a, target="x", operation="y", source="gone")
        check_eq(a.call("lexbus", "token.revoke", {"jti": tok["jti"]})["status"], "success", "the first still writes")
        check("revoked" in (refused(bus, tok["token"], "gone") or ""), "and serves")
        check_eq(bus.stop(), 0, "first stopped")
        second = subprocess.Popen([lbtest.LEXBUSD, "-c", conf2], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            lbtest.wait_for(lambda: os.path.exists(sock2) or second.poll() is not None, 15, what="second daemon")
            check(second.poll() is None, "the second starts once the first is gone")
            _, entries = read_state(bus)
            check(any(e["k"] == "revoked/" + tok["jti"] for e in entries), "the first's revocation is on disk")
        finally:
            second.kill()          # SIGKILL: no clean unlock; the kernel drops the lock
            second.wait()
        os.unlink(sock2)
        bus.start()                # a lock file left behind by a dead daemon does not block
        check("revoked" in (refused(bus, tok["token"], "gone") or ""), "the revocation survived both")
    finally:
        bus.__exit__(None, None, None)
        shutil.rmtree(d2, ignore_errors=True)


@test
def state_max_refuses_with_a_clear_error():
    bus = token_bus_conf()
    try:
        text = open(bus.conf).read()
        bus.write_conf(text.replace("state_file = ", "state_max = 2K\nstate_file = "))
        bus.start()
        a = admin(bus)
        check_eq(a.call("lexbus", "token.state.set", {"jti": "small", "state": "x" * 500})["status"], "success", "fits")
        r = a.call("lexbus", "token.state.set", {"jti": "big", "state": "x" * 3000})
        check(r["status"] == "error" and "token state is full ([bus] state_max)" in r["error"]["message"], repr(r))
        check_eq(a.call("lexbus", "token.state.get", {"jti": "small"})["data"]["state"], "x" * 500, "the rest is kept")
        t = issue(a, target="x", operation="y", source="gone")
        check_eq(a.call("lexbus", "token.revoke", {"jti": t["jti"]})["status"], "success", "a revocation still fits")
        check_eq(bus.stop(), 0, "stopped")
        bus.write_conf(text.replace("state_file = ", "state_max = 100\nstate_file = "))
        for err in start_fails(bus):
            check("bad value '100' for 'state_max' (expected a size from 1K to 1G)" in err, err)
    finally:
        bus.__exit__(None, None, None)


@test
def production_tokens_need_a_state_file_and_development_warns():
    bus = token_bus_conf()
    try:
        text = open(bus.conf).read()
        bus.write_conf(text.replace("state_file = lexbus-state.json\n", ""))
        for err in start_fails(bus):
            check("[plugin tokens]" in err and "mode = production needs revocations that survive a restart" in err
                  and "state_file = PATH in [bus]" in err, err)
        bus.write_conf(text.replace("state_file = lexbus-state.json\n", "").replace("mode = production", "mode = development"))
        bus.start()
        check("revocations and token state are kept in memory only and will NOT survive a restart" in bus.logtext(),
              bus.logtext())
        check_eq(bus.stop(), 0, "stopped")
    finally:
        bus.__exit__(None, None, None)


@test
def the_old_tokens_state_file_is_imported_once():
    bus = token_bus_conf()
    try:
        old = os.path.join(bus.dir, "tokens-state.json")
        now = int(time.time())
        with open(old, "w") as f:
            json.dump({"revoked": {"J-rev": now + 3600, "J-past": now - 10}, "state": {"J-st": {"n": 7}}}, f)
        bus.start()
        check(not os.path.exists(old) and os.path.exists(old + ".migrated"), "renamed once imported")
        check("imported 2 revocation(s) and token state(s) from %s" % old in bus.logtext(), bus.logtext())
        a = admin(bus)
        check("revoked" in (refused(bus, mint(claims("r", jti="J-rev")), "r") or ""), "revocation imported")
        check(refused(bus, mint(claims("p", jti="J-past")), "p") is None, "an expired one is not")
        check_eq(a.call("lexbus", "token.state.get", {"jti": "J-st"})["data"]["state"], {"n": 7}, "state imported")
        a.call("lexbus", "token.state.delete", {"jti": "J-st"})
        check_eq(bus.stop(), 0, "stopped")
        bus.start()
        a = admin(bus)
        check_eq(a.call("lexbus", "token.state.get", {"jti": "J-st"})["data"]["state"], None, "a deleted state stays deleted")
        check("revoked" in (refused(bus, mint(claims("r", jti="J-rev")), "r") or ""), "the revocation is kept")
    finally:
        bus.__exit__(None, None, None)


@test
def a_daemonized_bus_writes_its_state_from_the_writer_thread():
    """lexbusd -d forks before the writer thread starts: revocations are durable in the background too."""
    bus = token_bus_conf()
    try:
        pidf = os.path.join(bus.dir, "lexbusd.pid")
        text = open(bus.conf).read().replace("[bus]\n", "[bus]\nlog_file = %s\n" % bus.logpath, 1)
        bus.write_conf(text)
        p = subprocess.run([lbtest.LEXBUSD, "-c", bus.conf, "-d", "-p", pidf], capture_output=True, text=True, timeout=20)
        check_eq(p.returncode, 0, "daemon started: " + p.stderr)
        pid = int(open(pidf).read())
        try:
            a = admin(bus)
            t = issue(a, target="x", operation="y", source="gone")
            check_eq(a.call("lexbus", "token.revoke", {"jti": t["jti"]})["status"], "success", "revoked")
            a.close()
        finally:
            os.kill(pid, signal.SIGKILL)
        lbtest.wait_for(lambda: not os.path.exists("/proc/%d" % pid) or
                        open("/proc/%d/stat" % pid).read().split()[2] == "Z", what="daemon gone")
        os.unlink(bus.sock)
        bus.start()
        check("revoked" in (refused(bus, t["token"], "gone") or ""), "the daemon's revocation is on disk")
    finally:
        bus.__exit__(None, None, None)


lbtest.main()
