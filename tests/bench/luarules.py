"""What a routes.lua rule costs per message, through the real daemon.

One run, three daemons side by side:
  plain    no [plugin lua] at all
  empty    [plugin lua] with no scripts
  rules    [plugin lua] with 20 rules that select none of the traffic below, plus
           one rule per workload (pass, Lua payload edit, JSONLex transform, fixed
           rewrite of the target)
Workloads: a stream of EMITs (a 122-byte object payload) from one connection to
one subscriber, pipelined in batches, through each daemon; and CALL round trips
(the same payload as params, answered by a service with a small result),
through the plain daemon and past 20 call rules that select none of them
(the response hook runs for every RESPONSE).  The figure is the
daemon's CPU time per message (the scheduler's run time of all its threads, so
other load on the machine does not count), the median over interleaved rounds;
"added" is that minus the same traffic through the plain daemon.

  LEXBUSD=... python3 luarules.py [SECONDS_PER_ITEM] [ROUNDS]
prints one JSON object (tests/bench/lua-bench.sh runs it on an optimised build).

  LEXBUSD=... python3 luarules.py --callgrind N
counts instead the instructions the daemon executes per message in routing
(router_input, hooks included) for N messages of each workload, each daemon
under valgrind's callgrind: exact and independent of the machine's load.
"""
import json
import os
import re
import socket
import statistics
import struct
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, "..", "integration"), os.path.join(HERE, "..", "lua")]
from lbtest import Bus  # noqa: E402
from luatest import scripts_dir  # noqa: E402

PAYLOAD = {"id": 12345, "title": "hello world", "tags": ["a", "b", "c"], "user": {"name": "ada", "age": 36},
           "body": "lorem ipsum dolor sit amet"}

ROUTES = r"""
local rules = {}
for i = 1, 20 do rules[#rules + 1] = { name = "other" .. i, event = "other" .. i .. ":*", to = "x" } end
for i = 1, 20 do rules[#rules + 1] = { name = "call" .. i, call = "svc" .. i .. ".*", to = "x" } end
rules[#rules + 1] = { name = "pass", event = "pass:x", fn = function(m) return nil end }
rules[#rules + 1] = { name = "edit", event = "edit:x", fn = function(m)
  local p = m.payload; p.seen = true; p.title = "[" .. p.title .. "]"; return m end }
rules[#rules + 1] = { name = "jsonlex", event = "jl:x", transform = {
  id = { ["$var"] = "payload.id" }, by = { ["$var"] = "from" },
  title = { ["$concat"] = { "[", { ["$var"] = "payload.title" }, "]" } } } }
rules[#rules + 1] = { name = "to", event = "to:x", to = "sink" }
return rules
"""

BATCH = 500


def frame(obj):
    b = json.dumps(obj, separators=(",", ":")).encode()
    return struct.pack(">I", len(b)) + b


def cpu_ns(pid):
    total = 0
    for t in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, t)) as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total


ID = re.compile(rb'"id":"([^"]*)"')


# Sent by every client before each measurement: a run of many rounds lasts
# longer than the bus's eviction of a silent connection (3 heartbeat
# intervals).  Without an id the bus answers nothing, so no count changes.
HEARTBEAT = frame({"type": "HEARTBEAT"})


class Calls:
    """A caller and a service answering every CALL, batch by batch."""

    def __init__(self, bus):
        self.bus = bus
        self.svc = bus.client("svc", methods=["m"])
        self.caller = bus.client("caller")
        self.batch = b"".join(frame({"type": "CALL", "id": "c%d" % i, "to": "svc", "method": "m", "params": PAYLOAD})
                              for i in range(BATCH))
        self.bufs = {}

    def _frames(self, c, n):
        buf = self.bufs.get(id(c), b"")
        out = []
        while len(out) < n:
            while len(buf) >= 4 and len(out) < n:
                (ln,) = struct.unpack_from(">I", buf)
                if len(buf) < 4 + ln:
                    break
                out.append(buf[4:4 + ln])
                buf = buf[4 + ln:]
            if len(out) < n:
                chunk = c.sock.recv(1 << 20)
                if not chunk:
                    raise RuntimeError("closed")
                buf += chunk
        self.bufs[id(c)] = buf
        return out

    def _round(self):
        self.caller.sock.sendall(self.batch)
        calls = self._frames(self.svc, BATCH)
        self.svc.sock.sendall(b"".join(
            frame({"type": "RESPONSE", "id": ID.search(f).group(1).decode(), "to": "caller", "status": "success",
                   "data": {"ok": True}}) for f in calls))
        self._frames(self.caller, BATCH)

    def run(self, event, secs):
        pid = self.bus.proc.pid
        for c in (self.svc, self.caller):
            c.sock.settimeout(30)
            c.sock.sendall(HEARTBEAT)
        self._round()
        n = 0
        c0 = cpu_ns(pid)
        t0 = time.time()
        while time.time() - t0 < secs:
            self._round()
            n += BATCH
        return n, cpu_ns(pid) - c0


class Stream:
    """A publisher and a subscriber ("sink") on one daemon."""

    def __init__(self, bus, events):
        self.bus = bus
        # "EVENT@SERVICE": the EMIT addressed to that service.
        self.sub = bus.client("sink", subscribe=sorted(set(e.split("@")[0] for e in events)))
        self.pub = bus.client("pub")
        self.batches = {}
        for e in events:
            msg = {"type": "EMIT", "event": e.split("@")[0], "payload": PAYLOAD}
            if "@" in e:
                msg["to"] = e.split("@")[1]
            self.batches[e] = frame(msg) * BATCH
        self.buf = b""

    def _take(self, n):
        """Reads n frames (counted by their length prefixes only)."""
        s = self.sub.sock
        got = 0
        buf = self.buf
        while got < n:
            while len(buf) >= 4:
                (ln,) = struct.unpack_from(">I", buf)
                if len(buf) < 4 + ln:
                    break
                buf = buf[4 + ln:]
                got += 1
                if got == n:
                    break
            if got < n:
                chunk = s.recv(1 << 20)
                if not chunk:
                    raise RuntimeError("subscriber closed")
                buf += chunk
        self.buf = buf

    def run(self, event, secs):
        """Messages sent and daemon CPU ns spent, for about secs of wall time."""
        batch = self.batches[event]
        pid = self.bus.proc.pid
        self.pub.sock.settimeout(30)
        self.sub.sock.settimeout(30)
        for c in (self.pub, self.sub):
            c.sock.sendall(HEARTBEAT)
        # Warm up (allocations, caches), then measure.
        self.pub.sock.sendall(batch)
        self._take(BATCH)
        n = 0
        c0 = cpu_ns(pid)
        t0 = time.time()
        while time.time() - t0 < secs:
            self.pub.sock.sendall(batch)
            self._take(BATCH)
            n += BATCH
        return n, cpu_ns(pid) - c0


def instructions(plugins, event, n):
    """Instructions per message in router_input, lexbusd under callgrind."""
    import shutil
    import subprocess
    import tempfile
    out = tempfile.mkdtemp(prefix="luarules-cg-")
    wrapper = os.path.join(out, "lexbusd")
    with open(wrapper, "w") as f:
        f.write("#!/bin/sh\nexec valgrind --tool=callgrind --callgrind-out-file=%s/cg.out %s \"$@\"\n"
                % (out, os.environ.get("LEXBUSD", "lexbusd")))
    os.chmod(wrapper, 0o755)
    import lbtest
    real = lbtest.LEXBUSD
    lbtest.LEXBUSD = wrapper
    try:
        bus = Bus(bus="log_level = info\n", plugins=plugins)
        try:
            if event == "CALL":
                c = Calls(bus)
                for x in (c.svc, c.caller):
                    x.sock.settimeout(120)
                for _ in range(n // BATCH):
                    c._round()
            else:
                st = Stream(bus, [event])
                st.pub.sock.settimeout(120)
                st.sub.sock.settimeout(120)
                for _ in range(n // BATCH):
                    st.pub.sock.sendall(st.batches[event])
                    st._take(BATCH)
        finally:
            bus.__exit__(None, None, None)
        ann = subprocess.run(["callgrind_annotate", "--inclusive=yes", os.path.join(out, "cg.out")],
                             capture_output=True, text=True).stdout
        for line in ann.splitlines():
            if "router.c:router_input" in line:
                return round(int(line.split()[0].replace(",", "")) / (n * (2 if event == "CALL" else 1)))
        return None
    finally:
        lbtest.LEXBUSD = real
        shutil.rmtree(out, ignore_errors=True)


def main_callgrind(n):
    plugins = {"plain": "", "empty": "[plugin lua]\ndir = %s\n" % scripts_dir(),
               "rules": "[plugin lua]\ndir = %s\n" % scripts_dir({"routes.lua": ROUTES})}
    work = [("no plugin", "plain", "none:x"), ("plugin, no scripts", "empty", "none:x"),
            ("40 rules, none selects", "rules", "none:x"), ("Lua rule, passes", "rules", "pass:x"),
            ("Lua rule, edits the payload", "rules", "edit:x"), ("JSONLex transform", "rules", "jl:x"),
            ("fixed rewrite of the target", "rules", "to:x"), ("no plugin, EMIT sent to the service", "plain", "to:x@sink"),
            ("CALL round trip, no plugin", "plain", "CALL"), ("CALL round trip, 40 rules, none selects", "rules", "CALL")]
    per = {name: instructions(plugins[kind], event, n) for name, kind, event in work}
    base, cbase = per["no plugin"], per["CALL round trip, no plugin"]
    print(json.dumps({"instructions_per_message_routed": per,
                      "added": {k: v - (cbase if k.startswith("CALL") else base) for k, v in per.items()
                                if k not in ("no plugin", "CALL round trip, no plugin")},
                      "rewrite_of_the_target_over_sending_it_there": per["fixed rewrite of the target"]
                      - per["no plugin, EMIT sent to the service"],
                      "messages": n, "note": "CALL: per frame routed (the CALL and its RESPONSE)"}, indent=1))


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--callgrind":
        return main_callgrind(int(sys.argv[2]))
    secs = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    conf = "log_level = info\n"
    plain = Bus(bus=conf)
    empty = Bus(bus=conf, plugins="[plugin lua]\ndir = %s\n" % scripts_dir())
    rules = Bus(bus=conf, plugins="[plugin lua]\ndir = %s\n" % scripts_dir({"routes.lua": ROUTES}))
    work = [("no plugin", plain, "none:x"), ("plugin, no scripts", empty, "none:x"),
            ("40 rules, none selects", rules, "none:x"), ("Lua rule, passes", rules, "pass:x"),
            ("Lua rule, edits the payload", rules, "edit:x"), ("JSONLex transform", rules, "jl:x"),
            ("fixed rewrite of the target", rules, "to:x"), ("no plugin, EMIT sent to the service", plain, "to:x@sink"),
            ("CALL round trip, no plugin", plain, "CALL"), ("CALL round trip, 40 rules, none selects", rules, "CALL")]
    try:
        streams = {}
        for bus in (plain, empty, rules):
            streams[id(bus)] = Stream(bus, [e for _, b, e in work if b is bus and e != "CALL"])
        calls = {id(b): Calls(b) for b in (plain, rules)}
        samples = {name: [] for name, _, _ in work}
        for _ in range(rounds):
            for name, bus, event in work:
                n, ns = (calls if event == "CALL" else streams)[id(bus)].run(event, secs)
                samples[name].append(ns / n)
        per = {name: statistics.median(v) for name, v in samples.items()}
        base, cbase = per["no plugin"], per["CALL round trip, no plugin"]
        out = {"ns_per_message": {k: round(v, 1) for k, v in per.items()},
               "added_ns": {k: round(v - (cbase if k.startswith("CALL") else base), 1) for k, v in per.items()
                            if k not in ("no plugin", "CALL round trip, no plugin")},
               "spread_ns": {k: round(max(v) - min(v), 1) for k, v in samples.items()},
               "rewrite_of_the_target_over_sending_it_there_ns":
                   round(per["fixed rewrite of the target"] - per["no plugin, EMIT sent to the service"], 1),
               "rounds": rounds, "seconds_per_item": secs, "batch": BATCH,
               "payload_bytes": len(json.dumps(PAYLOAD, separators=(",", ":")))}
        c = rules.client("probe")
        st = c.call("lexbus", "rules")["data"]["rules"]
        out["rule_avg_us_in_daemon"] = {r["name"]: round(r["avgUs"], 3) for r in st if r["matches"]}
        print(json.dumps(out, indent=1))
    except Exception:
        # Say what the daemons said: a bench that fails must show why.
        for bus in (plain, empty, rules):
            sys.stderr.write("--- %s, end of its log:\n%s\n" % (bus.dir, bus.logtext()[-3000:]))
        raise
    finally:
        for bus in (plain, empty, rules):
            bus.__exit__(None, None, None)


if __name__ == "__main__":
    main()
