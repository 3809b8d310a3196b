"""Turns lbbench's JSON lines into the comparison table and a JSON file."""
import json
import os
import platform
import sys

src, out, quick = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
rows = [json.loads(l) for l in open(src) if l.strip()]
PEERS = ["lexbus", "lexbus-tls", "nats", "redis", "mqtt", "floor"]


def pick(workload, key, **match):
    """Per peer, the figure; with several rounds, the median round."""
    got = {}
    for r in rows:
        if r["workload"] == workload and all(r.get(k) == v for k, v in match.items()):
            got.setdefault(r["peer"], []).append(r[key])
    return {p: sorted(v)[len(v) // 2] for p, v in got.items()}


def fmt(v):
    if v is None:
        return "-"
    if v >= 1e6:
        return "%.2fM" % (v / 1e6)
    if v >= 1e4:
        return "%.0fk" % (v / 1e3)
    return "%.1f" % v


lines = []
table = []
for size in (16, 128, 1024):
    table.append(("1→1 %d B msgs/s" % size, pick("stream", "msgs_per_s", size=size), True))
    table.append(("1→1 %d B MB/s" % size, pick("stream", "mb_per_s", size=size), True))
for q in ("p50_us", "p90_us", "p99_us", "p999_us"):
    table.append(("RTT %s µs (median of 5 rounds)" % q.split("_")[0], pick("rtt", q), False))
table.append(("fan-out 50 deliveries/s", pick("fanout", "msgs_per_s"), True))

hdr = "| workload | " + " | ".join(PEERS) + " | lexbus/NATS | lexbus/Redis |"
lines.append(hdr)
lines.append("|" + "---|" * (len(PEERS) + 3))
ratios = {}
for name, vals, higher_better in table:
    lx, nats, redis = vals.get("lexbus"), vals.get("nats"), vals.get("redis")
    rn = lx / nats if lx and nats else None
    rr = lx / redis if lx and redis else None
    ratios[name] = {"vs_nats": rn, "vs_redis": rr}
    lines.append("| %s | %s | %s | %s |" % (name, " | ".join(fmt(vals.get(p)) for p in PEERS),
                                           "%.2f×" % rn if rn else "-", "%.2f×" % rr if rr else "-"))
idle = [r for r in rows if r["workload"] == "idle"]
growth = [r for r in rows if r["workload"] == "growth"]
loss = [r for r in rows if r.get("lost") or r.get("order_errors")]
if idle:
    lines.append("")
    lines.append("Idle connections: %d registered, %.2f KiB resident per connection in lexbusd." %
                 (idle[0]["connections"], idle[0]["kib_per_connection"]))
if growth:
    g = growth[0]
    lines.append("Memory over two more 1→1 runs: %d KiB → %d KiB." % (g["rss_after_run_kib"], g["rss_after_second_run_kib"]))
lines.append("Loss or reordering: %s." % ("NONE" if not loss else ", ".join("%s %s" % (r["peer"], r["workload"]) for r in loss)))
rtt = pick("rtt", "p50_us")
if rtt.get("lexbus") and rtt.get("floor"):
    lines.append("RTT p50 lexbus / bare socket: %.2f×%s." % (
        rtt["lexbus"] / rtt["floor"],
        " (relay floor, a byte-copying process in the middle: %.1f µs; lexbus / relay: %.2f×)" % (
            rtt["relay"], rtt["lexbus"] / rtt["relay"]) if rtt.get("relay") else ""))
# The client library against the raw-protocol client, same workloads.
lib_stream, raw_stream = pick("stream", "msgs_per_s", size=128), None
raw_stream = lib_stream.get("lexbus")
lib_rtt = rtt.get("liblexbus")
for peer, api in (("liblexbus", "json_t payloads"), ("liblexbus-raw", "JSON-text payloads")):
    if lib_stream.get(peer) and raw_stream:
        lines.append("Through liblexbus, %s (tests/bench/lbclient.c): 1→1 128 B %s msgs/s (%.2f× lbbench's raw client%s)." % (
            api, fmt(lib_stream[peer]), lib_stream[peer] / raw_stream,
            ", %.2f× NATS's raw client" % (lib_stream[peer] / lib_stream["nats"]) if lib_stream.get("nats") else ""))
if lib_rtt and rtt.get("lexbus"):
    lines.append("Through liblexbus: RTT p50 %.1f µs (%.2f× the raw client)." % (lib_rtt, lib_rtt / rtt["lexbus"]))
machine = "%s, %d cores, %s" % (platform.platform(), os.cpu_count(), platform.processor() or platform.machine())
lines.append("Machine: %s%s." % (machine, " (quick run)" if quick else ""))
text = "\n".join(lines)
print(text)
json.dump({"machine": machine, "quick": quick, "results": rows, "ratios": ratios, "table": text},
          open(out, "w"), indent=1)
print("\nwritten to %s" % out)
