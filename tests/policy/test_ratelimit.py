"""ratelimit through the real daemon: exact limits at window edges."""
import json
import os
import signal
import subprocess
import tempfile
import time

import lbtest
from lbtest import LEXBUSD, Bus, check, check_eq, test

from tokenutil import SECRET, claims, mint


def emit(c, i):
    c.send({"type": "EMIT", "id": "e%d" % i, "event": "tick", "ack": True})
    return c.recv()


def rl_bus(extra=""):
    return Bus(plugins="[plugin ratelimit]\nwindow = 1s\nmax = 5\n" + extra)


@test
def over_the_limit_is_refused_with_retry_after():
    with rl_bus() as bus:
        c = bus.client("chatty")
        for i in range(5):
            check_eq(emit(c, i)["type"], "ACK", "message %d within the limit" % i)
        m = emit(c, 5)
        check_eq((m["type"], m["id"], m["error"]["code"]), ("ERROR", "e5", "RATE_LIMITED"), "sixth refused")
        check(0 < m["error"]["retryAfterMs"] <= 1000, "retryAfterMs %r" % m["error"]["retryAfterMs"])
        r = c.call("lexbus", "ping")
        check_eq((r["status"], r["error"]["code"]), ("error", "RATE_LIMITED"), "a CALL is answered as a call")
        check(0 < r["error"]["retryAfterMs"] <= 1000, "retryAfterMs on the RESPONSE")
        time.sleep(m["error"]["retryAfterMs"] / 1000 + 0.05)
        check_eq(emit(c, 6)["type"], "ACK", "allowed again after retryAfterMs")
        other = bus.client("quiet")
        check_eq(emit(other, 0)["type"], "ACK", "limits are per service")


@test
def no_burst_above_the_limit_across_a_window_edge():
    with rl_bus() as bus:
        c = bus.client("edgy")
        t0 = time.time()
        for i in range(3):
            check_eq(emit(c, i)["type"], "ACK", "first three")
        time.sleep(0.6)
        for i in range(3, 5):
            check_eq(emit(c, i)["type"], "ACK", "two more at 0.6 s")
        # Just after the first three leave the window (t0 + 1 s), only three
        # more fit: the two from 0.6 s are still inside it.  A token bucket
        # or fixed window would admit five here.
        time.sleep(max(0, t0 + 1.05 - time.time()))
        got = [emit(c, i)["type"] for i in range(5, 10)]
        check(time.time() - t0 < 1.55, "burst sent before the 0.6 s messages leave (machine too slow?)")
        check_eq(got, ["ACK", "ACK", "ACK", "ERROR", "ERROR"], "exactly three admitted at the edge")


@test
def overrides_heartbeats_responses_and_stats():
    with rl_bus("limit.vip = 20/1s\n") as bus:
        vip = bus.client("vip", methods=["m"])
        for i in range(20):
            check_eq(emit(vip, i)["type"], "ACK", "vip message %d" % i)
        check_eq(emit(vip, 20)["error"]["code"], "RATE_LIMITED", "vip limit is 20")
        for _ in range(10):
            vip.send({"type": "HEARTBEAT", "from": "vip", "timestamp": 1})
        caller = bus.client("caller")
        caller.send({"type": "CALL", "id": "c1", "to": "vip", "method": "m"})
        check_eq(vip.recv()["id"], "c1", "call delivered")
        vip.send({"type": "RESPONSE", "id": "c1", "status": "success", "data": 1})
        check_eq(caller.recv()["status"], "success", "a RESPONSE is never rate limited")
        st = caller.call("lexbus", "stats")["data"]["plugins"]["ratelimit"]
        check_eq(st["services"]["vip"]["limited"], 1, "limited count")
        check_eq(st["services"]["vip"]["max"], 20, "override shown")
        check(st["limited"] >= 1 and st["allowed"] >= 20, "totals")


@test
def bad_settings_stop_start_up():
    for extra, want in (("limit.x = lots\n", "limit.x = lots"), ("max = 0\n", "max"), ("window = soon\n", "window")):
        bus = Bus(start=False, plugins="[plugin ratelimit]\n" + extra)
        p = subprocess.run([LEXBUSD, "-c", bus.conf], capture_output=True, text=True, timeout=20)
        check(p.returncode == 1 and "[plugin ratelimit]" in p.stderr and want in p.stderr, p.stderr)
        bus.__exit__(None, None, None)


# ---------------------------------------------------------------- tokens


def tick_token(source, **kw):
    """A token for the EMITs of `tick` to broadcast, for `source` only."""
    return mint(claims(source, target="broadcast", operation="tick", **kw))


def session(source):
    return mint(claims(source))


def token_rl_bus(rl, tokens_first=True, start=True):
    bus = Bus(start=False)
    keyf = os.path.join(bus.dir, "broker.key")
    with open(keyf, "w") as f:
        f.write("main:%s\n" % SECRET)
    tok = "[plugin tokens]\nkey_file = %s\n" % keyf
    rls = "[plugin ratelimit]\n" + rl
    bus.write_conf(open(bus.conf).read() + (tok + rls if tokens_first else rls + tok))
    return bus.start() if start else bus


def emit_tok(c, i, token):
    c.send({"type": "EMIT", "id": "t%d" % i, "event": "tick", "ack": True, "token": token})
    return c.recv()


@test
def ceiling_caps_every_message_exempt_or_not():
    with token_rl_bus("window = 10s\nmax = 5\nceiling = 8\nhonour_exempt = yes\n") as bus:
        ex, plain = tick_token("mix", rateLimitExempt=True), tick_token("mix")
        c = bus.raw()
        check_eq(c.register("mix", token=session("mix"))["type"], "REGISTER_ACK", "register")
        got = [emit_tok(c, i, ex)["type"] for i in range(4)]
        got += [emit_tok(c, 4 + i, plain)["type"] for i in range(5)]
        check_eq(got, ["ACK"] * 8 + ["ERROR"], "4 exempt + 4 plain reach the ceiling of 8")
        m = emit_tok(c, 9, ex)
        check_eq(m["error"]["code"], "RATE_LIMITED", "an exempt message is over the ceiling too")
        check("ceiling" in m["error"]["message"], m["error"]["message"])
        check(0 < m["error"]["retryAfterMs"] <= 10000, "retryAfterMs %r" % m["error"]["retryAfterMs"])
        # Non-exempt messages are still held to max inside the ceiling.
        d = bus.raw()
        dp = tick_token("plainy")
        d.register("plainy", token=session("plainy"))
        got = [emit_tok(d, i, dp)["type"] for i in range(6)]
        check_eq(got, ["ACK"] * 5 + ["ERROR"], "max applies to non-exempt messages")
        got = [emit_tok(d, 6 + i, tick_token("plainy", rateLimitExempt=True))["type"] for i in range(4)]
        check_eq(got, ["ACK"] * 3 + ["ERROR"], "exempt messages fill the rest of the ceiling")
        probe = bus.raw()
        probe.register("probe", token=session("probe"))
        st = probe.call("lexbus", "stats")["data"]["plugins"]["ratelimit"]
        check_eq(st["ceiling"], 8, "ceiling shown")
        check_eq((st["services"]["mix"]["allowed"], st["services"]["mix"]["limited"]), (8, 2), "counters")


@test
def idle_services_are_forgotten():
    with rl_bus("limit.probe = 1000/1s\n") as bus:
        probe = bus.client("probe")

        def tracked():
            r = probe.call("lexbus", "stats")
            return r["data"]["plugins"]["ratelimit"]["trackedServices"]
        for i in range(60):
            c = bus.client("eph-%d" % i)
            check_eq(emit(c, 0)["type"], "ACK", "one message")
            c.close()
        n = tracked()
        check(n >= 60, "every sender is tracked while its window is open (%d)" % n)
        lbtest.wait_for(lambda: tracked() <= 1, timeout=8, what="idle services to be forgotten")
        st = probe.call("lexbus", "stats")["data"]["plugins"]["ratelimit"]
        check("eph-0" not in st["services"] and st["allowed"] >= 60, "gone from services, still in the totals")
        c = bus.client("eph-0")
        check_eq(emit(c, 0)["type"], "ACK", "a forgotten service starts afresh")


def reload(bus, conf_text=None):
    if conf_text is not None:
        bus.write_conf(conf_text)
    n = bus.logtext().count("configuration reloaded")
    bus.send_signal(signal.SIGHUP)
    lbtest.wait_for(lambda: bus.logtext().count("configuration reloaded") > n, what="reload")


@test
def limits_survive_sighup():
    with Bus(plugins="[plugin ratelimit]\nwindow = 30s\nmax = 5\n") as bus:
        conf = open(bus.conf).read()
        c = bus.client("busy")
        check_eq([emit(c, i)["type"] for i in range(5)], ["ACK"] * 5, "fill the limit")
        reload(bus)
        m = emit(c, 5)
        check_eq(m.get("error", {}).get("code"), "RATE_LIMITED", "still limited after SIGHUP (logrotate)")
        check(0 < m["error"]["retryAfterMs"] <= 30000, "retryAfterMs %r" % m["error"]["retryAfterMs"])
        check("evicted" not in bus.logtext() and bus.stats()["connections"]["evicted"] == 0,
              "a wall-clock step evicted connections:\n" + bus.logtext()[-2000:])
        reload(bus, conf.replace("max = 5", "max = 7"))
        check_eq([emit(c, 6 + i)["type"] for i in range(3)], ["ACK", "ACK", "ERROR"], "a raised max admits the difference")
        reload(bus, conf.replace("max = 5", "max = 3"))
        check_eq(emit(c, 9)["error"]["code"], "RATE_LIMITED", "a lowered max keeps the newest sends")
        st = bus.stats()["plugins"]["ratelimit"]["services"]["busy"]
        check_eq((st["max"], st["allowed"]), (3, 7), "new limit applied to the kept history")


CLOCK_SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
/* Wall clock = real + the seconds in $LB_FAKE_CLOCK_FILE; CLOCK_MONOTONIC untouched. */
static long long offset(void)
{
    const char *p = getenv("LB_FAKE_CLOCK_FILE");
    char b[32];
    int fd = p ? open(p, O_RDONLY) : -1;
    if (fd < 0) return 0;
    ssize_t n = read(fd, b, sizeof b - 1);
    close(fd);
    if (n <= 0) return 0;
    b[n] = 0;
    return atoll(b);
}
int clock_gettime(clockid_t id, struct timespec *ts)
{
    static int (*real)(clockid_t, struct timespec *);
    if (!real) real = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
    int r = real(id, ts);
    if (!r && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE)) ts->tv_sec += offset();
    return r;
}
struct tv { long sec, usec; };
int gettimeofday(struct tv *tv, void *tz)
{
    struct timespec ts;
    (void)tz;
    clock_gettime(CLOCK_REALTIME, &ts);
    tv->sec = ts.tv_sec;
    tv->usec = ts.tv_nsec / 1000;
    return 0;
}
time_t time(time_t *t)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (t) *t = ts.tv_sec;
    return ts.tv_sec;
}
"""


@test
def a_wall_clock_step_back_lets_nothing_through():
    d = tempfile.mkdtemp(prefix="lexbus-clock-")
    src, shim, offf = (os.path.join(d, n) for n in ("shim.c", "shim.so", "offset"))
    with open(src, "w") as f:
        f.write(CLOCK_SHIM)
    subprocess.run(["cc", "-shared", "-fPIC", "-o", shim, src, "-ldl"], check=True)
    with open(offf, "w") as f:
        f.write("0")
    asan = os.environ.get("ASAN_OPTIONS", "")
    env = {"LD_PRELOAD": shim, "LB_FAKE_CLOCK_FILE": offf,
           "ASAN_OPTIONS": (asan + ":" if asan else "") + "verify_asan_link_order=0"}
    with Bus(plugins="[plugin ratelimit]\nwindow = 30s\nmax = 5\nlimit.probe = 1000/1s\n", env=env) as bus:
        c = bus.client("steady")
        check_eq([emit(c, i)["type"] for i in range(6)], ["ACK"] * 5 + ["ERROR"], "fill the limit")
        with open(offf, "w") as f:
            f.write("-3600")

        def stepped():
            probe = bus.client("probe")
            t = probe.call("lexbus", "ping")["data"]["time"]
            probe.close()
            return t < (time.time() - 1800) * 1000
        # libevent re-reads the wall clock every few seconds: wait until the bus sees the step.
        lbtest.wait_for(stepped, timeout=10, step=0.2, what="the daemon to see the clock step back")
        # The same connection: the heartbeat sweep runs on the monotonic clock, so the step
        # evicts no one (give the sweep, once a second, time to run).
        time.sleep(1.5)
        m = emit(c, 6)
        check_eq(m.get("error", {}).get("code"), "RATE_LIMITED", "still limited after the clock stepped back an hour")
        check(0 < m["error"]["retryAfterMs"] <= 30000, "retryAfterMs %r" % m["error"]["retryAfterMs"])


@test
def exemptions_before_tokens_are_warned_about():
    rl = "honour_exempt = yes\n"

    def where(bus):
        lines = open(bus.conf).read().splitlines()
        return "%s:%d: " % (bus.conf, lines.index("honour_exempt = yes") + 1)
    with token_rl_bus(rl, tokens_first=False) as bus:
        want = "warn  [ratelimit] " + where(bus) + "honour_exempt = yes has no effect: [plugin tokens] comes after"
        check(want in bus.logtext(), "want %r in:\n%s" % (want, bus.logtext()))
        p = subprocess.run([LEXBUSD, "-t", "-c", bus.conf], capture_output=True, text=True, timeout=20)
        check(p.returncode == 0 and "has no effect" in p.stderr, "lexbusd -t warns too: " + p.stderr)
    with token_rl_bus(rl) as bus:
        check("[ratelimit]" in bus.logtext() and "has no effect" not in bus.logtext()
              and "no [plugin tokens]" not in bus.logtext(), "no warning in the right order:\n" + bus.logtext())
    with rl_bus(rl) as bus:
        check("warn  [ratelimit] " + where(bus) + "honour_exempt = yes, but there is no [plugin tokens]" in bus.logtext(),
              bus.logtext())

lbtest.main()
