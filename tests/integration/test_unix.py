"""The unix transport's settings through the real daemon: SIGHUP applies
`mode` (the socket is chmod-ed) and `allow_uids`/`allow_gids` (new
connections are checked against the new lists, open ones from peers no
longer allowed are closed with FORBIDDEN); a reload it cannot apply (a new
`path`, a bad value) keeps every old setting and says why.  And its input
path: frames cut anywhere by the socket, frames larger than one read, and
frames a paused sender had already sent all arrive whole and in order."""
import json
import os
import random
import socket
import stat
import struct
import threading
import time

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


def emit_frame(event, seq, pad, to=None):
    msg = {"type": "EMIT", "event": event, "payload": {"seq": seq, "pad": "x" * pad}}
    if to:
        msg["to"] = to
    return lbtest.frame(msg)


def expect_seqs(sub, event, pads, timeout=20):
    """sub gets EVENT `event` with payload seq 0..len(pads)-1, in order."""
    for seq, pad in enumerate(pads):
        m = sub.recv_type("EVENT", timeout=timeout)
        check(m["event"] == event and m["payload"]["seq"] == seq and len(m["payload"]["pad"]) == pad,
              "event %d of %d whole and in order: got seq %r (%d bytes of pad)"
              % (seq, len(pads), m["payload"].get("seq"), len(m["payload"].get("pad", ""))))


@test
def frames_cut_anywhere_arrive_whole_and_in_order():
    with Bus(bus="log_level = info\n") as bus:
        sub = bus.client("cut-sub", subscribe=["cut"])
        pub = bus.client("cut-pub")
        rnd = random.Random(14)
        # Small frames, frames around one read (16 KiB), and frames many
        # reads long (the largest near max_frame's default of 1 MiB).
        pads = [rnd.choice((1, 40, 700, 3000, 16000, 16400, 40000)) for _ in range(300)] + [300000, 5, 1000000 - 100, 7]
        stream = b"".join(emit_frame("cut", i, pad) for i, pad in enumerate(pads))
        got = []
        reader = threading.Thread(target=lambda: got.append(expect_seqs(sub, "cut", pads) or "ok"))
        reader.start()
        off = 0
        while off < len(stream):
            # Pieces from one byte (headers cut in two) to more than a read.
            n = rnd.choice((1, 2, 3, 5, 17, 333, 4096, 16383, 16385, 70000))
            pub.send_raw(stream[off:off + n])
            off += n
            if rnd.random() < 0.2:
                time.sleep(0.002)   # let the daemon read what is there: a frame cut at this point
        reader.join(60)
        check_eq(got, ["ok"], "every event arrived")
        check_eq(pub.call("lexbus", "ping")["status"], "success", "the publisher is still served")


@test
def a_paused_sender_resumes_with_what_it_had_sent_in_order():
    # The sender's frames already read when it is paused are kept and
    # routed, first, when the recipient drains.
    with Bus(bus="outbuf_high = 64K\nslow_consumer_timeout = 60s\n") as bus:
        sink = bus.client("p-sink")
        sink.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        pub = bus.client("p-pub")
        pads = [1000] * 1500
        stream = b"".join(emit_frame("flood", i, pad, to="p-sink") for i, pad in enumerate(pads))
        sender = threading.Thread(target=lambda: pub.send_raw(stream))
        sender.start()
        lbtest.wait_for(lambda: bus.stats()["senderPauses"] >= 1, timeout=10, what="the sender to be paused")
        time.sleep(0.3)
        expect_seqs(sink, "flood", pads)
        sender.join(30)
        check(not sender.is_alive(), "the sender got everything out")
        pub.send({"type": "EMIT", "event": "flood", "to": "p-sink", "payload": {"seq": len(pads), "pad": ""},
                  "ack": True, "id": "last"})
        check_eq(pub.recv_type("ACK", timeout=10)["delivered"], 1, "the sender is served after its resume")
        check_eq(sink.recv_type("EVENT")["payload"]["seq"], len(pads), "and its next event follows the rest")


@test
def frames_before_a_bad_length_or_a_cut_are_routed_in_the_same_read():
    # One write: whole frames, then a bad length (the connection closes
    # while its read is being routed) or the start of a frame and EOF.
    # Both through the shared read buffer (small frames) and through the
    # connection's own (a frame larger than one read).
    with Bus() as bus:
        sub = bus.client("bad-sub", subscribe=["bad"])
        for pad in (10, 100000):
            for tail in (struct.pack(">I", 0), struct.pack(">I", 500) + b'{"type":"EM'):
                pub = bus.client("bad-pub-%d-%d" % (pad, len(tail)))
                pub.send_raw(emit_frame("bad", 0, pad) + emit_frame("bad", 1, 3) + tail + emit_frame("bad", 2, 3))
                if len(tail) == 4:
                    msgs = pub.expect_closed()
                    check_eq([m["error"]["code"] for m in msgs if m.get("type") == "ERROR"], ["BAD_FRAME"],
                             "a zero length after two whole frames: BAD_FRAME, then closed")
                else:
                    pub.close()
                m0, m1 = sub.recv_type("EVENT", timeout=10), sub.recv_type("EVENT", timeout=10)
                check_eq([m0["payload"]["seq"], m1["payload"]["seq"], len(m0["payload"]["pad"])], [0, 1, pad],
                         "the frames before it were routed, whole (pad %d)" % pad)
                if len(tail) == 4:
                    sub.expect_nothing()   # nothing past the bad length
        check_eq(sub.call("lexbus", "ping")["status"], "success", "the bus is unharmed")


lbtest.main()
