"""tls-tcp refuses bad clients, logs why, and keeps serving everyone else:
plain TCP, garbage ClientHellos, TLS 1.0/1.1 (and 1.2 under min_protocol =
TLS1.3), missing / wrong-CA / expired / wrong-purpose client certificates,
stalled and trickling handshakes, max_connections, max_handshaking, and a
flood of refusals (logged with a per-second limit, all counted).  Each case
checks what the server did (its log and counters), not only that the client
failed."""
import re
import os
import socket
import ssl
import time

import lbtest
from lbtest import check, check_eq, test
from tlsutil import (certs, free_port, p, plugin_stats, read_all, refusals, s_client, served, sign,
                     tls_bus, tls_client, tmpdir)

# Lets openssl s_client offer TLS 1.0/1.1 (OpenSSL 3 refuses them client-side
# at the default security level, which would prove nothing about the server).
OLD = ["-cipher", "DEFAULT@SECLEVEL=0"]


def refused_with(bus, before, why, what):
    """Waits for one more handshake refusal whose log line contains `why`."""
    lbtest.wait_for(lambda: refusals(bus) > before, what=what + " to be refused")
    line = [l for l in bus.logtext().splitlines() if "TLS handshake refused from" in l][-1]
    check(any(w in line for w in (why if isinstance(why, tuple) else (why,))), "%s: logged %r, want %r" % (what, line, why))
    return refusals(bus)


def good_client_ok(good, what):
    check_eq(good.call("lexbus", "ping")["status"], "success", "established client still served after " + what)


@test
def not_tls_at_all():
    cdir = certs("svc-a")
    port = free_port()
    with tls_bus(cdir, port) as bus:
        good = tls_client(cdir, port, "svc-a")
        good.register("svc-a")
        n = refusals(bus)
        cases = [
            ("plain-text protocol frame", lbtest.frame({"type": "REGISTER", "serviceName": "plain"}),
             ("wrong version number", "packet length too long", "record layer failure")),
            ("an HTTP request", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", ("http request", "wrong version number")),
            ("a garbage ClientHello", b"\x16\x03\x01\x00\x2c" + b"\x01\x00\x00\x28" + os.urandom(40),
             ("length mismatch", "bad packet length", "unsupported protocol", "record layer failure", "decode error",
              "bad length", "packet length", "wrong version number", "unknown protocol", "unsupported")),
            ("a truncated ClientHello then EOF", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
             ("the client closed the connection", "unexpected eof")),
            ("random bytes", os.urandom(600), None),
        ]
        for what, data, why in cases:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(data)
            if what.endswith("EOF"):
                s.shutdown(socket.SHUT_WR)
            got, how = read_all(s)
            s.close()
            check(b"REGISTER_ACK" not in got and b"{" not in got, "%s was answered in clear text: %r" % (what, got))
            check(how in ("eof", "reset"), "%s: connection not closed by the server (%s)" % (what, how))
            if why:
                n = refused_with(bus, n, why, what)
            else:
                lbtest.wait_for(lambda: refusals(bus) > n, what=what + " to be refused")
                n = refusals(bus)
            good_client_ok(good, what)
        st = plugin_stats(bus)
        check(st["refused"] == len(cases) and st["connections"] == 1, "stats: %r" % st)


@test
def old_protocol_versions_refused():
    cdir = certs("svc-a")
    port = free_port()
    with tls_bus(cdir, port) as bus:
        good = tls_client(cdir, port, "svc-a")
        good.register("svc-a")
        cert = ["-cert", p(cdir, "svc-a-cert.pem"), "-key", p(cdir, "svc-a-key.pem"), "-CAfile", p(cdir, "ca-cert.pem")]
        for flag in ("-tls1", "-tls1_1"):
            n = refusals(bus)
            r = s_client(port, flag, *(OLD + cert))
            check(r.returncode != 0, "%s handshake succeeded:\n%s" % (flag, r.out))
            # The server itself said no: a protocol_version alert (70), not a client-side refusal.
            check("alert protocol version" in r.out, "%s: no protocol_version alert from the server:\n%s" % (flag, r.out))
            refused_with(bus, n, "unsupported protocol", flag)
            good_client_ok(good, flag)
        # The same client at TLS 1.2 is fine: the refusal was about the version.
        r = s_client(port, "-tls1_2", *cert, input=b"")
        check("Verify return code: 0" in r.out and "TLSv1.2" in r.out, "TLS 1.2 with s_client:\n" + r.out)
    # min_protocol = TLS1.3 refuses 1.2.
    port = free_port()
    with tls_bus(cdir, port, extra="min_protocol = TLS1.3\n") as bus:
        n = refusals(bus)
        check(not served(lambda: tls_client(cdir, port, "svc-a", maxver=ssl.TLSVersion.TLSv1_2), "svc-a"),
              "TLS 1.2 accepted under min_protocol = TLS1.3")
        refused_with(bus, n, "unsupported protocol", "TLS 1.2 under min_protocol = TLS1.3")
        check(served(lambda: tls_client(cdir, port, "svc-a"), "svc-a"), "TLS 1.3 served")


@test
def bad_client_certificates_refused():
    cdir = certs("svc-a")
    other = certs("svc-a")   # an unrelated CA issuing the same name
    port = free_port()
    ca = p(cdir, "ca-cert.pem")
    exp_crt, exp_key = sign(cdir, "svc-a", ["DNS:svc-a"], start="20200101000000Z", end="20210101000000Z")
    srv_crt, srv_key = p(cdir, "localhost-cert.pem"), p(cdir, "localhost-key.pem")   # serverAuth only
    future_crt, future_key = sign(cdir, "svc-a", ["DNS:svc-a"], start="20990101000000Z", end="21000101000000Z")
    with tls_bus(cdir, port) as bus:
        good = tls_client(cdir, port, "svc-a")
        good.register("svc-a")
        cases = [
            ("no certificate (s_client)", ["-CAfile", ca], "did not return a certificate"),
            ("wrong-CA certificate (s_client)", ["-CAfile", ca, "-cert", p(other, "svc-a-cert.pem"),
                                                  "-key", p(other, "svc-a-key.pem")],
             ("unable to get local issuer certificate", "unknown ca", "certificate verify failed")),
            ("expired certificate", ["-CAfile", ca, "-cert", exp_crt, "-key", exp_key], "certificate has expired"),
            ("not yet valid certificate", ["-CAfile", ca, "-cert", future_crt, "-key", future_key],
             "certificate is not yet valid"),
            ("server-only certificate as a client certificate", ["-CAfile", ca, "-cert", srv_crt, "-key", srv_key],
             "unsuitable certificate purpose"),
        ]
        for what, args, why in cases:
            for ver in ("-tls1_2", "-tls1_3"):
                n = refusals(bus)
                # s_client sends a REGISTER frame once connected; the server must never answer it.
                r = s_client(port, ver, *args, input=lbtest.frame({"type": "REGISTER", "serviceName": "svc-a"}))
                check("REGISTER_ACK" not in r.out, "%s %s was served:\n%s" % (what, ver, r.out))
                refused_with(bus, n, why, "%s %s" % (what, ver))
                good_client_ok(good, what)
            # And through Python's ssl module, the raw protocol client.
            if "-cert" in args:
                cert, key = args[args.index("-cert") + 1], args[args.index("-key") + 1]
                check(not served(lambda: tls_client(cdir, port, cert=cert, key=key), "svc-a"), what + " served (python)")
            else:
                check(not served(lambda: tls_client(cdir, port), "svc-a"), what + " served (python)")
        check_eq(plugin_stats(bus)["connections"], 1, "only the good connection is held")


@test
def stalled_and_trickling_handshakes_time_out():
    cdir = certs("svc-a")
    port = free_port()
    with tls_bus(cdir, port) as bus:   # handshake_timeout = 1s
        # Connects and says nothing.
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        t = time.time()
        got, how = read_all(s)
        took = time.time() - t
        check(got == b"" and how in ("eof", "reset"), "silent client: %r %s" % (got, how))
        check(0.8 < took < 3, "closed after %.2fs, handshake_timeout is 1s" % took)
        s.close()
        check("TLS handshake not done within 1000 ms" in bus.logtext(), "timeout logged")
        # Sends a byte of a ClientHello every 0.2 s: activity must not extend the deadline.
        hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32)
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        t = time.time()
        closed = False
        for b in hello:
            try:
                s.sendall(bytes([b]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.2)
            s.settimeout(0.001)
            try:
                if s.recv(100) == b"":
                    closed = True
                    break
            except socket.timeout:
                pass
            except ConnectionResetError:
                closed = True
                break
        took = time.time() - t
        s.close()
        check(closed and took < 2.5, "trickling client held the handshake open %.2fs (closed=%s)" % (took, closed))
        st = plugin_stats(bus)
        check(st["handshakeTimeouts"] == 2 and st["handshaking"] == 0 and st["connections"] == 0, "stats: %r" % st)


@test
def max_connections_and_timeouts_free_slots():
    cdir = certs("svc-a")
    port = free_port()
    with tls_bus(cdir, port, extra="max_connections = 3\n") as bus:
        good = tls_client(cdir, port, "svc-a")
        good.register("svc-a")
        stalled = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
        lbtest.wait_for(lambda: plugin_stats(bus)["connections"] == 3, what="3 sockets held")
        # Full: the next client is closed at once, before any TLS.
        t = time.time()
        check(not served(lambda: tls_client(cdir, port, "svc-a"), "svc-a"), "a 4th connection was served")
        check(time.time() - t < 1, "the 4th connection was not refused at once")
        lbtest.wait_for(lambda: "max_connections (3) reached" in bus.logtext(), what="limit logged")
        good_client_ok(good, "the limit")
        # handshake_timeout frees the stalled slots; then newcomers are served again.
        for s in stalled:
            got, how = read_all(s)
            check(how in ("eof", "reset"), "stalled socket not closed: %s" % how)
            s.close()
        check(served(lambda: tls_client(cdir, port, "svc-a"), "svc-a"), "slot freed after handshake_timeout")
        st = plugin_stats(bus)
        check(st["overLimit"] >= 1 and st["handshakeTimeouts"] == 2 and st["maxConnections"] == 3, "stats: %r" % st)


@test
def max_handshaking_refuses_at_accept():
    cdir = certs("svc-a")
    port = free_port()
    with tls_bus(cdir, port, extra="max_handshaking = 2\n") as bus:   # handshake_timeout = 1s
        good = tls_client(cdir, port, "svc-a")
        good.register("svc-a")
        stalled = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
        lbtest.wait_for(lambda: plugin_stats(bus)["handshaking"] == 2, what="2 handshakes in progress")
        # Two stalled handshakes: the next newcomer is closed at once, before any TLS
        # (established connections do not count: the good one is a third socket).
        t = time.time()
        check(not served(lambda: tls_client(cdir, port, "svc-a"), "svc-a"), "a 3rd handshake was served")
        check(time.time() - t < 1, "the 3rd handshake was not refused at once")
        lbtest.wait_for(lambda: "max_handshaking (2) reached" in bus.logtext(), what="limit logged")
        good_client_ok(good, "max_handshaking")
        st = plugin_stats(bus)
        check(st["overHandshaking"] >= 1 and st["maxHandshaking"] == 2 and st["overLimit"] == 0, "stats: %r" % st)
        for s in stalled:
            read_all(s)
            s.close()
        check(served(lambda: tls_client(cdir, port, "svc-a"), "svc-a"), "served once the stalled ones timed out")
    port = free_port()
    with tls_bus(cdir, port) as bus:
        check_eq(plugin_stats(bus)["maxHandshaking"], 256, "default max_handshaking")


def idle_from(addr, port, n):
    """n TCP connections from source address addr that never say anything."""
    return [socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(addr, 0)) for _ in range(n)]


@test
def one_address_cannot_hold_every_handshake_slot():
    """40 idle TCP connections from one address used to fill max_handshaking
    and lock every new TLS client out until handshake_timeout."""
    cdir = certs("svc-a")
    port = free_port()
    # A long handshake_timeout: the idle sockets hold their slots for the whole test.
    with tls_bus(cdir, port, extra="max_handshaking = 20\n", timeout="60s") as bus:
        idle = idle_from("127.0.0.2", port, 40)
        held = lambda st: st["handshaking"] + st["overHandshaking"] + st.get("overHandshakingPerAddress", 0)
        lbtest.wait_for(lambda: held(plugin_stats(bus)) == 40, what="the 40 idle sockets accepted or refused")
        t = time.time()
        check(served(lambda: tls_client(cdir, port, "svc-a"), "svc-a"), "a client from another address is served")
        check(time.time() - t < 5, "served at once")
        st = plugin_stats(bus)
        check_eq((st["handshaking"], st["overHandshakingPerAddress"], st["maxHandshakingPerAddress"], st["overHandshaking"]),
                 (16, 24, 16, 0), "127.0.0.2 holds max_handshaking_per_address (default 16) slots: %r" % st)
        check("refused 127.0.0.2:" in bus.logtext() and "max_handshaking_per_address (16) reached" in bus.logtext(),
              "the refusals are logged")
        # The same address may handshake again once its own handshakes are done.
        for s in idle:
            s.close()
        lbtest.wait_for(lambda: plugin_stats(bus)["handshaking"] == 0, what="the idle sockets released")
        check(served(lambda: tls_client(cdir, port, "svc-a", source="127.0.0.2"), "svc-a"),
              "127.0.0.2 is served again once its handshakes are over")


def summarised(log):
    """Refusals the log accounts for: own lines plus the '... and K more' summaries."""
    lines = log.count("TLS handshake refused from")
    more = sum(int(k) for k in re.findall(r"\.\.\. and (\d+) more refused in the last second", log))
    return lines, more


@test
def a_flood_of_refusals_is_logged_with_a_limit_and_counted_in_full():
    cdir = certs("svc-a")
    port = free_port()
    # No handshake limits: all 300 reach the handshake even if accepted in one batch.
    with tls_bus(cdir, port, extra="max_handshaking = 0\nmax_handshaking_per_address = 0\n") as bus:
        good = tls_client(cdir, port, "svc-a")
        good.register("svc-a")
        for _ in range(300):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            s.close()
        lbtest.wait_for(lambda: plugin_stats(bus)["refused"] == 300, timeout=20, what="300 refusals counted")
        # The summary of the last second is written when that second ends.
        lbtest.wait_for(lambda: sum(summarised(bus.logtext())) == 300, timeout=5,
                        what="every refusal logged or summarised: %r" % (summarised(bus.logtext()),))
        lines, more = summarised(bus.logtext())
        print("# %d refusal lines, %d more summarised" % (lines, more))
        check(lines <= 100 and more >= 200, "%d refusal lines, %d summarised" % (lines, more))
        good_client_ok(good, "the flood")
        check_eq(plugin_stats(bus)["refused"], 300, "refused counter")


@test
def flood_of_bad_clients_does_not_disturb_a_busy_one():
    cdir = certs("svc-a", "svc-b")
    other = certs("svc-a")
    port = free_port()
    with tls_bus(cdir, port) as bus:
        a = tls_client(cdir, port, "svc-a")
        a.register("svc-a", methods=["echo"])
        b = tls_client(cdir, port, "svc-b")
        b.register("svc-b")
        bad = []
        for i in range(30):
            kind = i % 3
            try:
                if kind == 0:
                    s = socket.create_connection(("127.0.0.1", port), timeout=5)
                    s.sendall(os.urandom(64))
                    bad.append(s)
                elif kind == 1:
                    bad.append(socket.create_connection(("127.0.0.1", port), timeout=5))   # stalls
                else:
                    served(lambda: tls_client(cdir, port, cert=p(other, "svc-a-cert.pem"), key=p(other, "svc-a-key.pem")),
                           "svc-a")
            except OSError:
                pass
            b.send({"type": "CALL", "id": "c%d" % i, "to": "svc-a", "method": "echo", "params": {"i": i}})
            m = a.recv()
            check_eq(m["params"], {"i": i}, "call %d during the flood" % i)
            a.send({"type": "RESPONSE", "id": m["id"], "status": "success", "data": i})
            check_eq(b.recv()["data"], i, "response %d during the flood" % i)
        for s in bad:
            s.close()
        lbtest.wait_for(lambda: plugin_stats(bus)["connections"] == 2, timeout=5, what="bad sockets released")


try:
    lbtest.main()
finally:
    import tlsutil
    tlsutil.cleanup()
