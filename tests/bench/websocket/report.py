"""Summarises tests/bench/websocket/run.sh's results (medians over rounds)
into a table and a JSON file: report.py RESULTS.jsonl OUT.json"""
import json
import platform
import statistics
import sys
import time

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]


def med(pred, key):
    v = [r[key] for r in rows if pred(r)]
    return statistics.median(v) if v else float("nan")


out = {"date": time.strftime("%Y-%m-%d"), "machine": "%s, %d cores" % (platform.platform(), __import__("os").cpu_count()),
       "raw": rows, "summary": {}}
s = out["summary"]
lines = ["| workload | unix | websocket | websocket/unix |", "|---|---|---|---|"]
for size in (16, 128, 1024):
    u = med(lambda r: r.get("workload") == "stream" and r["peer"] == "lexbus" and r["size"] == size, "msgs_per_s")
    w = med(lambda r: r.get("workload") == "stream" and r["peer"] == "lexbus-ws" and r["size"] == size, "msgs_per_s")
    s["stream_%d" % size] = {"unix": u, "websocket": w, "ratio": w / u}
    lines.append("| 1->1 %d B msgs/s | %.0fk | %.0fk | %.2fx |" % (size, u / 1e3, w / 1e3, w / u))
fu = med(lambda r: r.get("workload") == "floor" and r["peer"] == "floor-unix", "mb_per_s")
ft = med(lambda r: r.get("workload") == "floor" and r["peer"] == "floor-tcp", "mb_per_s")
s["floor_mb_per_s"] = {"unix": fu, "tcp": ft, "ratio": ft / fu}
lines.append("| floor: bare socket MB/s (no broker) | %.0f | %.0f (TCP) | %.2fx |" % (fu, ft, ft / fu))
for q in ("p50_us", "p90_us", "p99_us"):
    u = med(lambda r: r.get("workload") == "rtt" and r["peer"] == "lexbus", q)
    w = med(lambda r: r.get("workload") == "rtt" and r["peer"] == "lexbus-ws", q)
    s["rtt_" + q] = {"unix": u, "websocket": w, "ratio": w / u}
    lines.append("| RTT %s | %.1f | %.1f | %.2fx |" % (q.replace("_us", " us"), u, w, w / u))
lines += ["", "| Socket.IO (same socket.io-client load) | lexbus | Node socket.io 4 | lexbus/Node |", "|---|---|---|---|"]
for key, label, fmt in (("events_per_s", "events/s", "%.0f"), ("server_cpu_us_per_event", "server CPU us/event", "%.2f")):
    l = med(lambda r: r.get("workload") == "sio-events" and r["server"] == "lexbus", key)
    n = med(lambda r: r.get("workload") == "sio-events" and r["server"] == "node", key)
    s["sio_" + key] = {"lexbus": l, "node": n, "ratio": l / n}
    lines.append(("| %s | " + fmt + " | " + fmt + " | %.2fx |") % (label, l, n, l / n))
for q in ("p50_us", "p90_us", "p99_us"):
    l = med(lambda r: r.get("workload") == "sio-ack" and r["server"] == "lexbus", q)
    n = med(lambda r: r.get("workload") == "sio-ack" and r["server"] == "node", q)
    s["sio_ack_" + q] = {"lexbus": l, "node": n, "ratio": l / n}
    lines.append("| ack round trip %s | %.1f | %.1f | %.2fx |" % (q.replace("_us", " us"), l, n, l / n))
lost = sum(r.get("order_errors", 0) for r in rows)
lines.append("")
lines.append("Order errors or loss: %s." % ("NONE" if lost == 0 else lost))
out["table"] = "\n".join(lines)
json.dump(out, open(sys.argv[2], "w"), indent=1)
print(out["table"])
print("\nwritten to %s" % sys.argv[2])
