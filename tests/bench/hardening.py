"""Before/after figures for issue 8 items 4, 13, 14 and 15, for one lexbusd
binary (run it for each build being compared):

    LEXBUSD=path/to/lexbusd python3 tests/bench/hardening.py

Prints one JSON object.  Not a test: it measures what a hostile client
costs everyone else (a subscriber that never reads, oversized SUBSCRIBEs,
services amplification, self-flooding connections)."""
import json
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import lbtest  # noqa: E402
from lbtest import Bus, Closed  # noqa: E402


def rss_kib(bus):
    with open("/proc/%d/status" % bus.proc.pid) as f:
        return int([l for l in f if l.startswith("VmRSS:")][0].split()[1])


def healthy_rate_with_a_stuck_subscriber(stuck):
    """Item 4: events/s a reading subscriber gets from a blasting publisher,
    with (or without) a subscriber to '>' that never reads and reconnects
    whenever it is closed."""
    with Bus(bus="log_level = info\n") as bus:
        good = bus.client("good", subscribe=["news:*"])
        stop = threading.Event()

        def stuck_one():
            while not stop.is_set():
                try:
                    c = lbtest.RawClient.unix(bus.sock)
                    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                    c.register("stuck", subscribe=[">"])
                    while not stop.is_set():
                        time.sleep(0.05)
                        try:
                            c.sock.setblocking(False)
                            if c.sock.recv(1, socket.MSG_PEEK) == b"":
                                break
                        except BlockingIOError:
                            pass
                        except OSError:
                            break
                    c.close()
                except (OSError, Closed, lbtest.TestFailure):
                    time.sleep(0.01)
        t = threading.Thread(target=stuck_one, daemon=True) if stuck else None
        if t:
            t.start()
            time.sleep(0.3)
        pub = bus.client("pub")
        n, frame = 100000, lbtest.frame({"type": "EMIT", "event": "news:x", "payload": "p" * 100})

        def blast():
            for _ in range(n // 100):
                pub.send_raw(frame * 100)
        start = time.time()
        threading.Thread(target=blast, daemon=True).start()
        got = 0
        while got < n and time.time() - start < 30:
            try:
                good.recv(max(0.1, 30 - (time.time() - start)))
            except lbtest.TestFailure:
                break
            got += 1
        took = time.time() - start
        stop.set()
        pauses = bus.stats()["senderPauses"]
        return {"events": got, "eventsPerSec": round(got / took), "senderPauses": pauses}


def subscribe_refusals():
    """Item 13: loop time of 50 refused SUBSCRIBEs of 1024 new patterns on
    top of 1024 held."""
    with Bus(bus="log_level = info\n") as bus:
        c = bus.client("subs")
        c.send({"type": "SUBSCRIBE", "id": "s0", "events": ["held:%d" % i for i in range(1024)]})
        c.recv_type("ACK")
        frame = lbtest.frame({"type": "SUBSCRIBE", "id": "s1", "events": ["new:%d" % i for i in range(1024)]})
        ping = bus.client("ping")
        t = time.time()
        for _ in range(50):
            c.send_raw(frame)
        ping.call("lexbus", "ping", timeout=60)
        return {"msPerRefusal": round((time.time() - t) * 1000 / 50, 2)}


def services_amplification():
    """Item 14: 3000 services; one `services` call's reply, and 100
    pipelined ones from a client that does not read."""
    with Bus(bus="log_level = info\n") as bus:
        clients = [bus.client("svc-%04d" % i) for i in range(3000)]
        c = bus.client("asker")
        req = {"type": "CALL", "id": "q", "to": "lexbus", "method": "services", "params": {}}
        t = time.time()
        c.send(req)
        c.sock.settimeout(30)
        hdr = c.sock.recv(4, socket.MSG_WAITALL)
        size = int.from_bytes(hdr, "big")
        body = b""
        while len(body) < size:
            body += c.sock.recv(size - len(body))
        one_ms = (time.time() - t) * 1000
        before = rss_kib(bus)
        bad = bus.client("bad")
        bad.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        frame = lbtest.frame(req)
        ping = bus.client("ping")
        t = time.time()
        bad.send_raw(frame * 100)
        time.sleep(0.05)
        ping.call("lexbus", "ping", timeout=60)
        stall_ms = (time.time() - t - 0.05) * 1000
        grew = rss_kib(bus) - before
        for x in clients:
            x.close()
        return {"replyBytes": size, "requestBytes": len(frame), "oneCallMs": round(one_ms, 1),
                "pipelined100PingMs": round(stall_ms, 1), "pipelined100RssGrowthKiB": grew}


def self_flooders():
    """Item 15: 8 connections each sending 16 MB to themselves, reading
    nothing: the daemon's RSS."""
    with Bus(bus="log_level = info\n") as bus:
        before = rss_kib(bus)
        conns = []
        for i in range(8):
            c = bus.client("self%d" % i)
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            conns.append(c)
        frame = lbtest.frame({"type": "EMIT", "event": "x", "to": "self0", "payload": "s" * 4000})
        def flood(c, name):
            f = frame.replace(b'"self0"', ('"%s"' % name).encode())
            c.sock.settimeout(3)
            try:
                for _ in range(4000 // 64):
                    c.sock.sendall(f * 64)
            except OSError:
                pass
        ts = [threading.Thread(target=flood, args=(c, "self%d" % i), daemon=True) for i, c in enumerate(conns)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(20)
        time.sleep(0.5)
        return {"rssGrowthMiB": round((rss_kib(bus) - before) / 1024, 1)}


def main():
    out = {"lexbusd": lbtest.LEXBUSD}
    out["item4_noStuck"] = healthy_rate_with_a_stuck_subscriber(False)
    out["item4_stuck"] = healthy_rate_with_a_stuck_subscriber(True)
    out["item13"] = subscribe_refusals()
    out["item14"] = services_amplification()
    out["item15"] = self_flooders()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
