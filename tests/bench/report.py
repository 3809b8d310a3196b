"""Turns lbbench's JSON lines into the comparison tables and a JSON file.

   report.py RESULTS.jsonl|EARLIER-OUT.json OUT.json QUICK(0|1) [WINDOW]
"""
import json
import os
import platform
import sys

src, out, quick = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
window = sys.argv[4] if len(sys.argv) > 4 else "500"
earlier = None
if src.endswith(".json"):   # an earlier report's output: render its rows again
    earlier = json.load(open(src))
    rows = earlier["results"]
else:
    rows = [json.loads(l) for l in open(src) if l.strip()]
PEERS = ["lexbus", "lexbus-tls", "nats", "redis", "mqtt", "floor"]
RIVALS = ["nats", "redis", "mqtt"]     # "best peer": the best of these
CLIENT_BOUND = 90.0                    # % of a core: the load generator is the limit


def matching(workload, method=None, **match):
    for r in rows:
        if r["workload"] == workload and r.get("method") == method and all(r.get(k) == v for k, v in match.items()):
            yield r


def pick(workload, key, method=None, **match):
    """Per peer, the figure; with several rounds, the median round."""
    got = {}
    for r in matching(workload, method, **match):
        if r.get(key) is not None:
            got.setdefault(r["peer"], []).append(r[key])
    return {p: sorted(v)[len(v) // 2] for p, v in got.items()}


def median_row(workload, peer, **match):
    """The row of the median round (by throughput), or None."""
    rs = sorted((r for r in matching(workload, **match) if r["peer"] == peer), key=lambda r: r["msgs_per_s"])
    return rs[len(rs) // 2] if rs else None


def fmt(v):
    if v is None:
        return "-"
    if v >= 1e6:
        return "%.2fM" % (v / 1e6)
    if v >= 1e4:
        return "%.0fk" % (v / 1e3)
    return "%.1f" % v


def ratio(a, b):
    return a / b if a and b else None


def rfmt(v):
    return "%.2f×" % v if v else "-"


def best_rival(vals, higher_better):
    have = [vals[p] for p in RIVALS if vals.get(p)]
    if not have:
        return None
    return max(have) if higher_better else min(have)


THROUGHPUT = [
    ("1→1 16 B msgs/s", "stream", {"size": 16}),
    ("1→1 128 B msgs/s", "stream", {"size": 128}),
    ("1→1 1024 B msgs/s", "stream", {"size": 1024}),
    ("1→1 128 B flow-controlled (≤%s ahead) msgs/s" % window, "stream-fc", {"size": 128}),
    ("fan-out 50 × 128 B deliveries/s", "fanout", {}),
    ("fan-out 50 × 128 B flow-controlled deliveries/s", "fanout-fc", {}),
]
table = [(name, pick(w, "msgs_per_s", **m), True) for name, w, m in THROUGHPUT]
table.insert(3, ("1→1 1024 B MB/s", pick("stream", "mb_per_s", size=1024), True))
for pinned, label in ((False, ""), (True, ", pinned to one vCPU")):
    for q in ("p50_us", "p99_us"):
        table.append(("RTT %s µs%s" % (q.split("_")[0], label), pick("rtt", q, pinned=pinned), False))

lines = []
hdr = "| workload | " + " | ".join(PEERS) + " | lexbus/NATS | lexbus/Redis | lexbus/best peer |"
lines.append(hdr)
lines.append("|" + "---|" * (len(PEERS) + 4))
ratios = {}
for name, vals, higher_better in table:
    lx = vals.get("lexbus")
    rn, rr, rb = ratio(lx, vals.get("nats")), ratio(lx, vals.get("redis")), ratio(lx, best_rival(vals, higher_better))
    ratios[name] = {"vs_nats": rn, "vs_redis": rr, "vs_best": rb}
    lines.append("| %s | %s | %s | %s | %s |" % (name, " | ".join(fmt(vals.get(p)) for p in PEERS), rfmt(rn), rfmt(rr), rfmt(rb)))
lines.append("")
rounds = len([r for r in matching("stream", size=128) if r["peer"] == "lexbus"])
lines.append("Throughput: median of %d interleaved round%s (Mosquitto: a fifth of the messages). " % (rounds, "s" if rounds != 1 else "") +
             "Round trips: median of 5 interleaved rounds; \"pinned\": broker, caller and responder all on CPU 0 "
             "(taskset), no cross-CPU wake-up. Ratios below 1× are better for RTT, above 1× for throughput.")

# CPU: is a figure bound by the load generator?
lines.append("")
lines.append("CPU during each throughput workload, %% of one core: broker / publisher / subscribers "
             "(all subscriber processes; the busiest in brackets when there are several) [other load on the machine: "
             "CPU used by neither]. "
             "* = a client process at ≥%.0f%%: that figure is bound by the load generator." % CLIENT_BOUND)
lines.append("")
lines.append("| workload | " + " | ".join(PEERS) + " |")
lines.append("|" + "---|" * (len(PEERS) + 1))
client_bound = []
for name, w, m in THROUGHPUT:
    cells = []
    for p in PEERS:
        r = median_row(w, p, **m)
        if not r:
            cells.append("-")
            continue
        b = "-" if r.get("server_cpu_pct") is None else "%.0f" % r["server_cpu_pct"]
        sub = "%.0f" % r["sub_cpu_pct"]
        if r.get("sub_procs", 1) > 1:
            sub += " (%.0f)" % r["sub_cpu_max_pct"]
        bound = max(r["pub_cpu_pct"], r["sub_cpu_max_pct"]) >= CLIENT_BOUND
        if bound:
            client_bound.append("%s %s" % (p, name))
        other = "" if r.get("other_cpu_pct") is None else " [%.0f]" % r["other_cpu_pct"]
        cells.append("%s / %.0f / %s%s%s" % (b, r["pub_cpu_pct"], sub, other, " *" if bound else ""))
    lines.append("| %s | %s |" % (name, " | ".join(cells)))
lines.append("")
lines.append("The same as CPU time per delivered message, ns: broker / subscribers (fan-out: per delivery to one subscriber).")
lines.append("")
lines.append("| workload | " + " | ".join(PEERS) + " |")
lines.append("|" + "---|" * (len(PEERS) + 1))
for name, w, m in THROUGHPUT:
    cells = []
    for p in PEERS:
        r = median_row(w, p, **m)
        cells.append("-" if not r or "sub_ns_per_msg" not in r else "%s / %d" % (
            "-" if r.get("server_ns_per_msg") is None else "%d" % r["server_ns_per_msg"], r["sub_ns_per_msg"]))
    lines.append("| %s | %s |" % (name, " | ".join(cells)))
fan = [r for r in matching("fanout")]
if fan:
    lines.append("")
    lines.append("Fan-out subscribers: 50 connections spread over %d processes." % fan[0].get("sub_procs", 1))

rtt_cpu = []
for pinned, label in ((False, "unpinned"), (True, "pinned")):
    cells = []
    for p in PEERS + ["relay"]:
        rs = sorted((r for r in matching("rtt", pinned=pinned) if r["peer"] == p), key=lambda r: r["p50_us"])
        if rs:
            r = rs[len(rs) // 2]
            srv = r.get("server_cpu_us_per_rt")
            cells.append("%s %s/%.1f/%.1f" % (p, "-" if srv is None else "%.1f" % srv, r["caller_cpu_us_per_rt"],
                                                r["responder_cpu_us_per_rt"]))
    if cells:
        rtt_cpu.append("%s: %s" % (label, ", ".join(cells)))
if rtt_cpu:
    lines.append("")
    lines.append("CPU per round trip, µs, broker/caller/responder (median round; relay: the copying process as broker) — " +
                 "; ".join(rtt_cpu) + ".")

others = sorted(r["other_cpu_pct"] for r in rows if r.get("other_cpu_pct") is not None and r.get("method") is None)
if others:
    lines.append("")
    lines.append("Other load during the runs (CPU used by neither the broker nor the clients, %% of one core): "
                 "median %.0f%%, max %.0f%% over %d runs." % (others[len(others) // 2], others[-1], len(others)))
idle = [r for r in rows if r["workload"] == "idle"]
growth = [r for r in rows if r["workload"] == "growth"]
checked = [r for r in rows if "lost" in r and r.get("method") is None]
loss = [r for r in checked if r.get("lost") or r.get("order_errors")]
lines.append("")
if idle:
    lines.append("Idle connections: %d registered, %.2f KiB resident per connection in lexbusd." %
                 (idle[0].get("registered", idle[0]["connections"]), idle[0]["kib_per_connection"]))
if growth:
    g = growth[0]
    lines.append("Memory over two more 1→1 runs: %d KiB → %d KiB." % (g["rss_after_run_kib"], g["rss_after_second_run_kib"]))
lines.append("Loss or reordering, checked in all %d runs (every workload, every peer): %s." % (
    len(checked), "NONE" if not loss else ", ".join(
        "%s %s (%s lost, %s out of order)" % (r["peer"], r["workload"], r.get("lost"), r.get("order_errors")) for r in loss)))
rtt = pick("rtt", "p50_us", pinned=False)
if rtt.get("lexbus") and rtt.get("floor"):
    lines.append("RTT p50 lexbus / bare socket: %.2f×%s." % (
        rtt["lexbus"] / rtt["floor"],
        " (relay floor, a byte-copying process in the middle: %.1f µs; lexbus / relay: %.2f×)" % (
            rtt["relay"], rtt["lexbus"] / rtt["relay"]) if rtt.get("relay") else ""))
# The client library against the raw-protocol client, same workloads.
lib_stream = pick("stream", "msgs_per_s", size=128)
raw_stream = lib_stream.get("lexbus")
lib_rtt = pick("rtt", "p50_us").get("liblexbus")
for peer, api in (("liblexbus", "json_t payloads"), ("liblexbus-raw", "JSON-text payloads")):
    if lib_stream.get(peer) and raw_stream:
        lines.append("Through liblexbus, %s (tests/bench/lbclient.c): 1→1 128 B %s msgs/s (%.2f× lbbench's raw client%s)." % (
            api, fmt(lib_stream[peer]), lib_stream[peer] / raw_stream,
            ", %.2f× NATS's raw client" % (lib_stream[peer] / lib_stream["nats"]) if lib_stream.get("nats") else ""))
if lib_rtt and rtt.get("lexbus"):
    lines.append("Through liblexbus: RTT p50 %.1f µs (%.2f× the raw client)." % (lib_rtt, lib_rtt / rtt["lexbus"]))

# --compare: the other load generator's rows, same brokers, same run.
if any(r.get("method") == "old" for r in rows):
    lines.append("")
    lines.append("Old method (--compare build) against this one, same brokers, interleaved in this run:")
    lines.append("")
    lines.append("| workload | lexbus old | lexbus fair | lexbus/NATS old | lexbus/NATS fair | lexbus/Redis old | lexbus/Redis fair |")
    lines.append("|---|---|---|---|---|---|---|")
    pairs = [("1→1 %d B msgs/s" % s, "stream", "msgs_per_s", {"size": s}) for s in (16, 128, 1024)]
    pairs += [("fan-out 50 × 128 B deliveries/s", "fanout", "msgs_per_s", {}),
              ("RTT p50 µs", "rtt", "p50_us", {})]
    compare = {}
    for name, w, key, m in pairs:
        new_m = dict(m, pinned=False) if w == "rtt" else m
        old, new = pick(w, key, "old", **m), pick(w, key, **new_m)
        cells = [fmt(old.get("lexbus")), fmt(new.get("lexbus"))]
        for rival in ("nats", "redis"):
            cells += [rfmt(ratio(old.get("lexbus"), old.get(rival))), rfmt(ratio(new.get("lexbus"), new.get(rival)))]
        compare[name] = {"old": old, "fair": new}
        lines.append("| %s | %s |" % (name, " | ".join(cells)))
    ratios["old_vs_fair"] = compare

try:
    load = "load average %.2f %.2f %.2f at the end" % os.getloadavg()
except OSError:
    load = "load unknown"
machine = "%s, %d cores, %s" % (platform.platform(), os.cpu_count(), platform.processor() or platform.machine())
if earlier:   # the run's machine and load, not this one's
    machine = earlier["machine"]
    load = earlier.get("load") or earlier["table"].rsplit("; ", 1)[-1].rstrip(".")
lines.append("")
lines.append("Machine: %s%s; %s." % (machine, " (quick run)" if quick else "", load))
text = "\n".join(lines)
print(text)
# One result per line: the file stays readable and diffs row by row.
head = json.dumps({"machine": machine, "load": load, "quick": quick, "window": int(window), "client_bound": client_bound,
                   "ratios": ratios, "table": text}, indent=1, ensure_ascii=False)
with open(out, "w") as f:
    f.write(head[:-2] + ',\n "results": [\n' + ",\n".join("  " + json.dumps(r) for r in rows) + "\n ]\n}\n")
print("\nwritten to %s" % out)
