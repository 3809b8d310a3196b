"""tls-tcp through the real daemon, with certificates made by scripts/gen-certs.sh:
serving, mutual-TLS identity (and names.<certname> mappings), resumption,
close_notify, IPv6, back-pressure, SIGHUP reload, the lexbus CLI over tls://
(server-name verification), configuration errors."""
import os
import signal
import socket
import ssl
import subprocess
import threading
import time

import lbtest
from lbtest import Bus, check, check_eq, test
from tlsutil import (certs, client_ctx, free_port, have_ipv6, p, plugin_stats, refusals, served, sign, tls_bus,
                     tls_client, tls_section, tmpdir)


@test
def mutual_tls_register_call_and_mix_with_unix():
    cdir = certs("svc-a", "svc-b")
    port = free_port()
    with tls_bus(cdir, port) as bus:
        a = tls_client(cdir, port, "svc-a")
        ack = a.register("svc-a", methods=["echo"])
        check_eq((ack["type"], ack["auth"]), ("REGISTER_ACK", "mtls"), "registered by certificate")
        local = bus.client("local", subscribe=["tls:*"])
        local.send({"type": "CALL", "id": "x1", "to": "svc-a", "method": "echo", "params": {"n": 1}})
        m = a.recv()
        check_eq((m["from"], m["params"]), ("local", {"n": 1}), "call over TLS")
        a.send({"type": "RESPONSE", "id": "x1", "status": "success", "data": "ok"})
        check_eq(local.recv()["data"], "ok", "response back to unix")
        a.send({"type": "EMIT", "event": "tls:hello", "payload": 2})
        check_eq(local.recv()["from"], "svc-a", "event from TLS to unix")
        # TLS to TLS.
        b = tls_client(cdir, port, "svc-b")
        b.register("svc-b")
        b.send({"type": "CALL", "id": "y1", "to": "svc-a", "method": "echo", "params": {}})
        check_eq(a.recv()["from"], "svc-b", "call TLS -> TLS")
        a.send({"type": "RESPONSE", "id": "y1", "status": "success", "data": "hi"})
        check_eq(b.recv()["data"], "hi", "response TLS -> TLS")
        s = [x for x in a.call("lexbus", "services")["data"] if x["name"] == "svc-a"][0]
        check_eq(s["sessions"][0]["transport"], "tls-tcp", "transport shown")
        st = plugin_stats(bus)
        check(st["connections"] == 2 and st["established"] == 2 and st["handshaking"] == 0, "stats: %r" % st)
        check(st["certSubject"] == "/CN=localhost" and st["certNotAfter"].endswith("Z"), "cert in stats: %r" % st)


@test
def certificate_binds_the_service_name():
    cdir = certs("svc-a")
    port = free_port()
    with tls_bus(cdir, port) as bus:
        a = tls_client(cdir, port, "svc-a")
        r = a.register("svc-b")
        check_eq((r["type"], r["error"]["code"]), ("ERROR", "FORBIDDEN"), "other name refused")
        check("svc-a" in r["error"]["message"], r["error"]["message"])
        check_eq(a.register("svc-a")["type"], "REGISTER_ACK", "own name accepted")
        # CN and every DNS SAN are names the connection may use; URI/IP SANs are not.
        crt, key = sign(cdir, "orders", ["DNS:orders-v2", "DNS:billing", "URI:audit", "IP:127.0.0.1"])
        for name, ok in (("orders", True), ("orders-v2", True), ("billing", True), ("audit", False),
                         ("127.0.0.1", False), ("svc-a", False)):
            c = tls_client(cdir, port, cert=crt, key=key)
            r = c.register(name)
            check_eq(r["type"] == "REGISTER_ACK", ok, "REGISTER %s with CN=orders: %r" % (name, r))
            if not ok:
                check_eq(r["error"]["code"], "FORBIDDEN", name)
            c.close()


def registers(cdir, port, cert, name):
    """The REGISTER answer type (REGISTER_ACK or an error code) for a client
    with the certificate of `cert` registering as `name`."""
    c = tls_client(cdir, port, cert)
    try:
        r = c.register(name)
        return r["type"] if r["type"] == "REGISTER_ACK" else r["error"]["code"]
    finally:
        c.close()


def reload_conf(bus, old, new, fails=False):
    """Rewrites bus.conf (old -> new), sends SIGHUP, waits for the reload
    (or, with fails, for its refusal: reloads are all or nothing)."""
    text = open(bus.conf).read()
    check(old in text, "%r not in bus.conf" % old)
    mark = "reload failed" if fails else "configuration reloaded"
    n = bus.logtext().count(mark)
    bus.write_conf(text.replace(old, new))
    bus.send_signal(signal.SIGHUP)
    lbtest.wait_for(lambda: bus.logtext().count(mark) > n, what="the reload" + (" to be refused" if fails else ""))


@test
def names_mapping_extends_the_certificate_identity():
    cdir = certs("svc-a", "svc-b")
    port = free_port()
    # Without a mapping the certificate's own names are all there is.
    with tls_bus(cdir, port) as bus:
        check_eq(registers(cdir, port, "svc-a", "billing"), "FORBIDDEN", "billing without names.svc-a")
    port = free_port()
    with tls_bus(cdir, port, extra="names.svc-a = svc-a, billing\n") as bus:
        a = tls_client(cdir, port, "svc-a")
        ack = a.register("billing", methods=["charge"])
        check_eq((ack["type"], ack["auth"]), ("REGISTER_ACK", "mtls"), "svc-a registers as billing")
        local = bus.client("local")
        local.send({"type": "CALL", "id": "m1", "to": "billing", "method": "charge", "params": {}})
        check_eq(a.recv()["from"], "local", "billing served by the svc-a certificate")
        for name, want in (("svc-a", "REGISTER_ACK"), ("other", "FORBIDDEN"), ("Billing", "FORBIDDEN"),
                           ("billing2", "FORBIDDEN")):
            check_eq(registers(cdir, port, "svc-a", name), want, "svc-a as %s (names compare exactly)" % name)
        check_eq(registers(cdir, port, "svc-b", "billing"), "FORBIDDEN", "the mapping is only for svc-a")
        check_eq(registers(cdir, port, "svc-b", "svc-b"), "REGISTER_ACK", "svc-b keeps its own name")
        check_eq(plugin_stats(bus)["nameMappings"], 1, "mapping in stats")
        # SIGHUP applies a changed mapping to new connections; the established one keeps its name.
        reload_conf(bus, "names.svc-a = svc-a, billing", "names.svc-a = invoices")
        check_eq(registers(cdir, port, "svc-a", "billing"), "FORBIDDEN", "billing after the mapping changed")
        check_eq(registers(cdir, port, "svc-a", "invoices"), "REGISTER_ACK", "the new mapping")
        check_eq(registers(cdir, port, "svc-a", "svc-a"), "REGISTER_ACK", "the certificate's own name stays")
        check_eq(a.call("lexbus", "ping")["status"], "success", "established billing connection kept")
        # A bad mapping on reload keeps the one in force, and says where.
        reload_conf(bus, "names.svc-a = invoices", "names.svc-a = invoices, not valid", fails=True)
        check(":%d: names.svc-a: 'not valid' is not a service name" % conf_line(bus, "names.svc-a") in bus.logtext(),
              "bad mapping on reload reported with file:line:\n" + bus.logtext()[-1500:])
        check_eq(registers(cdir, port, "svc-a", "invoices"), "REGISTER_ACK", "the previous mapping still applies")
        reload_conf(bus, "names.svc-a = invoices, not valid\n", "")
        check_eq(registers(cdir, port, "svc-a", "invoices"), "FORBIDDEN", "mapping removed")


def conf_line(bus, key):
    """1-based line of `key = ` in the bus's bus.conf."""
    for i, line in enumerate(open(bus.conf).read().splitlines(), 1):
        if line.startswith(key + " ="):
            return i
    raise lbtest.TestFailure("%s not in bus.conf" % key)


@test
def reload_cannot_change_whether_tls_authenticates():
    cdir = certs("svc-a")
    port = free_port()
    with tls_bus(cdir, port) as bus:   # require_client_cert = yes: declared an authenticator
        reload_conf(bus, "require_client_cert = yes", "require_client_cert = no")
        check("require_client_cert changed to no: refused" in bus.logtext() and "restart lexbusd" in bus.logtext(),
              "no warning:\n" + bus.logtext()[-1500:])
        check(not served(lambda: tls_client(cdir, port), "anyone"), "client certificates no longer required")
        check(served(lambda: tls_client(cdir, port, "svc-a"), "svc-a"), "still serving certificates")
        check_eq(plugin_stats(bus)["reloads"], 1, "the rest of the reload applied")
        # Without ca, keeping require_client_cert = yes is impossible: the whole reload is refused.
        text = open(bus.conf).read()
        ca_line = [l for l in text.splitlines() if l.startswith("ca = ")][0]
        reload_conf(bus, ca_line + "\n", "", fails=True)
        lbtest.wait_for(lambda: "reload failed" in bus.logtext() and "needs ca" in bus.logtext(), what="refused reload")
        check(not served(lambda: tls_client(cdir, port), "anyone"), "still requiring client certificates")
    port = free_port()
    with tls_bus(cdir, port, require=False) as bus:   # not an authenticator: cannot become one
        reload_conf(bus, "require_client_cert = no", "require_client_cert = yes")
        check("require_client_cert changed to yes: refused" in bus.logtext(), "no warning:\n" + bus.logtext()[-1500:])
        check(served(lambda: tls_client(cdir, port), "anyone"), "anonymous TLS clients still served until restart")


@test
def close_notify_on_a_normal_close_keeps_the_session():
    cdir = certs("svc-a")
    port = free_port()
    with tls_bus(cdir, port) as bus:
        # Session ids, not tickets: resumption then needs the server's session cache.
        ctx = client_ctx(cdir, "svc-a", maxver=ssl.TLSVersion.TLSv1_2)
        ctx.options |= ssl.OP_NO_TICKET
        for attempt in range(2):
            raw = socket.create_connection(("127.0.0.1", port), timeout=5)
            s = ctx.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False,
                                session=sess if attempt else None)
            c = lbtest.RawClient(s)
            check_eq(c.register("svc-a")["type"], "REGISTER_ACK", "registered")
            if attempt:
                check(s.session_reused, "the session of a cleanly closed connection was not resumed")
            sess = s.session
            # A zero-length frame: the bus answers ERROR and closes after flushing it.
            s.sendall(b"\0\0\0\0")
            check_eq(c.recv()["type"], "ERROR", "error before the close")
            try:
                end = s.recv(100)
            except ssl.SSLEOFError as e:
                raise lbtest.TestFailure("the server closed without close_notify: %s" % e)
            check_eq(end, b"", "clean TLS end")
            s.close()
        check("resumed handshake done" in bus.logtext(), "resumption logged")


@test
def certificate_without_a_usable_name_is_refused():
    cdir = certs()
    port = free_port()
    crt, key = sign(cdir, None, subj="/O=lexbus tests/OU=no common name")   # no CN, no SAN
    with tls_bus(cdir, port) as bus:
        check(not served(lambda: tls_client(cdir, port, cert=crt, key=key), "anything"),
              "a certificate naming nothing usable would leave the connection unbound")
        lbtest.wait_for(lambda: "has no CN or DNS SAN" in bus.logtext(), what="refusal logged")


@test
def client_certificates_optional():
    cdir = certs("svc-a")
    port = free_port()
    with tls_bus(cdir, port, require=False) as bus:
        anon = tls_client(cdir, port)
        ack = anon.register("whoever")
        check_eq(ack["type"], "REGISTER_ACK", "no certificate, no binding (development mode)")
        a = tls_client(cdir, port, "svc-a")
        check_eq(a.register("svc-x")["error"]["code"], "FORBIDDEN", "a presented certificate still binds")
        check_eq(a.register("svc-a")["auth"], "mtls", "bound by certificate")
        other = certs("svc-a")   # another CA
        check(not served(lambda: tls_client(cdir, port, ca=p(cdir, "ca-cert.pem"), cert=p(other, "svc-a-cert.pem"),
                                            key=p(other, "svc-a-key.pem")), "svc-a"),
              "an unverifiable certificate is refused even when certificates are optional")
    # Production mode: without required client certificates nothing authenticates.
    bus = Bus(start=False, bus="mode = production", plugins=tls_section(cdir, port, require=False))
    r = subprocess.run([lbtest.LEXBUSD, "-t", "-c", bus.conf], capture_output=True, text=True, timeout=20)
    check(r.returncode != 0, "production without an authenticator starts: " + r.stdout + r.stderr)
    bus.write_conf(open(bus.conf).read().replace("require_client_cert = no", "require_client_cert = yes"))
    r = subprocess.run([lbtest.LEXBUSD, "-t", "-c", bus.conf], capture_output=True, text=True, timeout=20)
    check_eq(r.returncode, 0, "mutual TLS authenticates in production: " + r.stdout + r.stderr)
    bus.__exit__(None, None, None)


@test
def session_resumption_keeps_the_identity():
    cdir = certs("svc-a")
    port = free_port()
    with tls_bus(cdir, port) as bus:
        for ver in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            ctx = client_ctx(cdir, "svc-a", maxver=ver)
            first = tls_client(cdir, port, ctx=ctx)
            check_eq(first.register("svc-a")["type"], "REGISTER_ACK", "first connection %s" % ver)
            sess = first.sock.session
            check(sess is not None, "a session to resume")
            again = tls_client(cdir, port, ctx=ctx, session=sess)
            check(again.sock.session_reused, "session resumed (%s)" % ver)
            check_eq(again.register("svc-b")["error"]["code"], "FORBIDDEN", "resumed session still bound (%s)" % ver)
            check_eq(again.register("svc-a")["type"], "REGISTER_ACK", "resumed session registers (%s)" % ver)
            first.close()
            again.close()
        check("resumed handshake done, client /CN=svc-a" in bus.logtext(), "resumption logged")


@test
def ipv6_and_several_listeners():
    if not have_ipv6():
        print("# skip: no IPv6 loopback")
        return
    cdir = certs("svc-a")
    p4 = free_port()
    p6 = free_port(socket.AF_INET6, "::1")
    with tls_bus(cdir, p4, listen=["127.0.0.1:%d" % p4, "[::1]:%d" % p6]) as bus:
        check(served(lambda: tls_client(cdir, p6, "svc-a", addr="::1"), "svc-a"), "served over IPv6")
        check(served(lambda: tls_client(cdir, p4, "svc-a"), "svc-a"), "served over IPv4")
        check("listening on [::1]:%d" % p6 in bus.logtext(), "IPv6 listener logged")
        check(served(lambda: tls_client(cdir, p6, "svc-a", addr="::1", host="::1"), "svc-a"),
              "server certificate verified by its IPv6 SAN")


@test
def large_frames_and_back_pressure():
    cdir = certs("prod", "slow")
    port = free_port()
    with tls_bus(cdir, port, bus="outbuf_high = 64K\noutbuf_max = 64M\nslow_consumer_timeout = 60s") as bus:
        slow = tls_client(cdir, port, "slow")
        slow.register("slow", subscribe=["bulk:*"])
        prod = tls_client(cdir, port, "prod")
        prod.register("prod")
        blob = "x" * 200000
        n = 60
        sent = threading.Event()
        errors = []

        def produce():
            try:
                prod.sock.settimeout(60)
                for i in range(n):
                    # To the service: point-to-point traffic waits for its
                    # recipient (a broadcast never holds a publisher back).
                    prod.send({"type": "EMIT", "event": "bulk:data", "to": "slow", "payload": {"i": i, "b": blob}})
                sent.set()
            except Exception as e:   # reported below
                errors.append(e)

        t = threading.Thread(target=produce, daemon=True)
        t.start()
        # The subscriber reads nothing yet: the bus must pause the producer
        # (stop reading it) rather than buffer 12 MB for the subscriber.
        lbtest.wait_for(lambda: bus.stats()["senderPauses"] >= 1, what="the producer to be paused")
        time.sleep(0.5)
        check(not sent.is_set(), "the producer was not held back")
        for i in range(n):
            m = slow.recv(timeout=20)
            check_eq((m["payload"]["i"], len(m["payload"]["b"])), (i, len(blob)), "event %d intact" % i)
        t.join(20)
        check(sent.is_set() and not errors, "the producer finished: %r" % errors)
        # The producer was resumed (lb_conn_writable -> set_read): it is served again.
        prod.sock.settimeout(5)
        check_eq(prod.call("lexbus", "ping", timeout=10)["status"], "success", "producer resumed")


def serial(pem):
    out = subprocess.run(["openssl", "x509", "-in", pem, "-noout", "-serial"], check=True, capture_output=True, text=True)
    return out.stdout.strip().split("=", 1)[1].upper()


@test
def sighup_reloads_certificates_keeping_connections():
    cdir = certs("svc-a")
    port = free_port()
    with tls_bus(cdir, port) as bus:
        old = tls_client(cdir, port, "svc-a")
        old.register("svc-a")
        old_ca = open(p(cdir, "ca-cert.pem")).read()
        old_serial = serial(p(cdir, "localhost-cert.pem"))
        certs("svc-a", out=cdir, force=True)   # new CA, new server and client certificates
        bus.send_signal(signal.SIGHUP)
        lbtest.wait_for(lambda: "certificates reloaded" in bus.logtext(), what="reload")
        check_eq(old.call("lexbus", "ping")["status"], "success", "established connection kept")
        new = tls_client(cdir, port, "svc-a")
        check_eq(new.register("svc-a")["type"], "REGISTER_ACK", "new certificates in use")
        stale = os.path.join(tmpdir("lexbus-stale-"), "old-ca.pem")
        open(stale, "w").write(old_ca)
        check(not served(lambda: tls_client(cdir, port, "svc-a", ca=stale), "svc-a"),
              "a client trusting only the old CA still accepted the server")
        check_eq(new.sock.getpeercert()["serialNumber"], serial(p(cdir, "localhost-cert.pem")), "server presents the new certificate")
        check(old_serial != serial(p(cdir, "localhost-cert.pem")), "gen-certs made a new server certificate")
        # A broken certificate on the next SIGHUP keeps the current context.
        good_cert = open(p(cdir, "localhost-cert.pem")).read()
        open(p(cdir, "localhost-cert.pem"), "w").write("-----BEGIN CERTIFICATE-----\nnot a certificate\n")
        bus.send_signal(signal.SIGHUP)
        lbtest.wait_for(lambda: "reload failed" in bus.logtext() and "cannot load cert" in bus.logtext(),
                        what="the failed reload to be reported")
        check(served(lambda: tls_client(cdir, port, "svc-a"), "svc-a"), "the previous certificates still serve")
        check_eq(old.call("lexbus", "ping")["status"], "success", "oldest connection still fine")
        # A key that does not match the certificate: also refused.
        open(p(cdir, "localhost-cert.pem"), "w").write(good_cert)
        other = certs(out=os.path.join(tmpdir("lexbus-other-"), "c"))
        with open(p(cdir, "localhost-key.pem"), "w") as f:
            f.write(open(p(other, "localhost-key.pem")).read())
        bus.send_signal(signal.SIGHUP)
        lbtest.wait_for(lambda: "mismatch" in bus.logtext(), what="key mismatch reported")
        check(served(lambda: tls_client(cdir, port, "svc-a"), "svc-a"), "still serving after a bad key")
        st = plugin_stats(bus)
        check(st["reloads"] == 1 and st["reloadFailures"] == 2, "reload counters: %r" % st)


@test
def cli_over_tls_verifies_the_server_and_uses_client_certs():
    cdir = certs("cli-user")
    port = free_port()
    with tls_bus(cdir, port) as bus:
        base = ["--server", "tls://localhost:%d" % port, "--ca", p(cdir, "ca-cert.pem"),
                "--cert", p(cdir, "cli-user-cert.pem"), "--key", p(cdir, "cli-user-key.pem")]
        r = bus.cli(*(base + ["--as", "cli-user", "call", "lexbus", "ping"]))
        check_eq(r.returncode, 0, "call over mutual TLS: " + r.stderr)
        r = bus.cli(*(base + ["call", "lexbus", "ping"]))
        check_eq(r.returncode, 1, "a name the certificate does not carry")
        check("FORBIDDEN" in r.stderr, r.stderr)
        ip = ["--server", "tls://127.0.0.1:%d" % port] + base[2:] + ["--as", "cli-user", "call", "lexbus", "ping"]
        check_eq(bus.cli(*ip).returncode, 0, "server verified by its IP SAN")
        other = certs()
        r = bus.cli(*(["--server", "tls://localhost:%d" % port, "--ca", p(other, "ca-cert.pem")] + base[4:]
                      + ["--as", "cli-user", "call", "lexbus", "ping"]))
        check_eq(r.returncode, 3, "untrusted server certificate refused")
        r = bus.cli(*(["--server", "tls://localhost:%d" % port, "--insecure"] + base[4:] + ["--as", "cli-user", "call", "lexbus", "ping"]))
        check(r.returncode == 0 and "WARNING: --insecure" in r.stderr, "insecure works and warns: " + r.stderr)
        r = bus.cli(*(["--server", "tls://localhost:%d" % port, "--ca", p(cdir, "ca-cert.pem"), "--as", "cli-user",
                       "call", "lexbus", "ping"]))
        check(r.returncode != 0, "no client certificate: refused")
        # The CLI and a raw client meet on the bus: an EMIT from the CLI reaches a TLS subscriber.
        sub = tls_client(cdir, port, "cli-user")
        sub.register("cli-user", subscribe=["cli:*"])
        r = bus.cli(*(base + ["--as", "cli-user", "emit", "cli:hello", '{"x":1}']))
        check_eq(r.returncode, 0, "emit over TLS: " + r.stdout + r.stderr)
        check_eq(sub.recv()["payload"], {"x": 1}, "event from the CLI over TLS")


@test
def cli_verifies_the_server_name_it_dialled():
    """A listener on 0.0.0.0 answers on every local address, but its
    certificate names only localhost, 127.0.0.1 and ::1: dialling another
    address must fail verification (exit 3), and the daemon must see the
    client abort the handshake with a certificate alert, which proves the TCP
    connection was made and the refusal was about the name."""
    cdir = certs("cli-user")
    port = free_port()
    with tls_bus(cdir, port, listen=["0.0.0.0:%d" % port]) as bus:
        tail = ["--ca", p(cdir, "ca-cert.pem"), "--cert", p(cdir, "cli-user-cert.pem"), "--key",
                p(cdir, "cli-user-key.pem"), "--as", "cli-user", "call", "lexbus", "ping"]
        r = bus.cli("--server", "tls://127.0.0.1:%d" % port, *tail)
        check_eq(r.returncode, 0, "a name the certificate carries: " + r.stderr)
        for host in ("127.0.0.2", "0.0.0.0"):
            n = refusals(bus)
            r = bus.cli("--server", "tls://%s:%d" % (host, port), *tail)
            check_eq(r.returncode, 3, "%s is not in the certificate: %s" % (host, r.stderr))
            lbtest.wait_for(lambda: refusals(bus) > n, what="the daemon to see the handshake refused")
            line = [l for l in bus.logtext().splitlines() if "TLS handshake refused from" in l][-1]
            check(any(a in line for a in ("alert certificate unknown", "alert bad certificate", "alert unknown ca")),
                  "%s: not refused for the certificate: %r" % (host, line))
        check_eq(plugin_stats(bus)["established"], 1, "only the CLI call that dialled a certified name got through")
        # The client says why: the certificate check, not a refused connection.
        r = bus.cli("--server", "tls://127.0.0.2:%d" % port, *tail)
        check("certificate verify failed" in r.stderr and "IP address mismatch" in r.stderr, r.stderr)


@test
def client_tries_every_address_of_the_server_name():
    """Debian's /etc/hosts lists `::1 localhost` too: when ::1 comes first and
    the bus listens on 127.0.0.1 only, tls://localhost must still connect.
    A private mount namespace gives the CLI such a hosts file."""
    cdir = certs("cli-user")
    port = free_port()
    hosts = os.path.join(cdir, "hosts")
    with open(hosts, "w") as f:
        f.write("::1 localhost\n127.0.0.1 localhost\n")
    with tls_bus(cdir, port) as bus:
        cmd = [lbtest.LEXBUS_CLI, "--server", "tls://localhost:%d" % port, "--ca", p(cdir, "ca-cert.pem"),
               "--cert", p(cdir, "cli-user-cert.pem"), "--key", p(cdir, "cli-user-key.pem"),
               "--as", "cli-user", "call", "lexbus", "ping"]
        probe = subprocess.run(["unshare", "-m", "sh", "-c", 'mount --bind "$0" /etc/hosts && getent ahosts localhost',
                                hosts], capture_output=True, text=True, timeout=20)
        check(probe.returncode == 0 and probe.stdout.split()[0] == "::1",
              "the test needs a mount namespace (root): %r" % (probe.stdout + probe.stderr))
        r = subprocess.run(["unshare", "-m", "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$@"', hosts] + cmd,
                           capture_output=True, text=True, timeout=30)
        check_eq(r.returncode, 0, "tls://localhost with ::1 first: " + r.stderr)


@test
def bad_tls_config_stops_start_up():
    cdir = certs("svc-a")
    bus = Bus(start=False, plugins="[plugin tls-tcp]\nlisten = 127.0.0.1:1\ncert = %s/nope.pem\nkey = %s/localhost-key.pem\n" % (cdir, cdir))
    base = open(bus.conf).read()

    def start_fails(text, want):
        bus.write_conf(text)
        r = subprocess.run([lbtest.LEXBUSD, "-t", "-c", bus.conf], capture_output=True, text=True, timeout=20)
        out = r.stdout + r.stderr
        check(r.returncode != 0 and "[plugin tls-tcp]" in out and want in out, "%r: %s" % (want, out))

    start_fails(base, "cannot load cert")
    good = base.replace("nope.pem", "localhost-cert.pem")
    start_fails(good + "min_protocol = TLS1.1\n", "min_protocol 'TLS1.1'")
    start_fails(good + "min_protocol = SSLv3\n", "min_protocol 'SSLv3'")
    start_fails(good.replace("localhost-key.pem", "ca-key.pem"), "mismatch")
    start_fails(good + "require_client_cert = yes\n", "needs ca")
    start_fails(good + "ca = %s/missing.pem\n" % cdir, "cannot load ca")
    start_fails(good + "ciphers = NO-SUCH-CIPHER\n", "no usable cipher")
    start_fails(good + "handshake_timeout = 0\n", "handshake_timeout")
    start_fails(good + "max_connections = -1\n", "max_connections")
    start_fails(good + "bogus = 1\n", "bogus")
    for bad in ("127.0.0.1", "::1:7443", "[::1]7443", "example.org:7443", "127.0.0.1:99999", "127.0.0.1:"):
        start_fails(good.replace("127.0.0.1:1", bad), "listen '%s'" % bad)
    start_fails(good.replace("listen = 127.0.0.1:1\n", ""), "listen = host:port")
    start_fails(good + "max_handshaking = -1\n", "max_handshaking")
    # names.<certname> lines: errors carry the file and line of the key.
    ca = "ca = %s/ca-cert.pem\n" % cdir
    at = "%s:%d: " % (bus.conf, good.count("\n") + 2)   # the line after ca
    start_fails(good + ca + "names.svc-a = billing, bad name\n", at + "names.svc-a: 'bad name' is not a service name")
    start_fails(good + ca + "names.svc-a = billing,,x\n", at + "names.svc-a: '' is not a service name")
    start_fails(good + ca + "names.svc-a = " + "x" * 129 + "\n", "is not a service name")
    start_fails(good + ca + "names.svc-a = " + ", ".join("n%d" % i for i in range(17)) + "\n", at + "names.svc-a: more than 16")
    start_fails(good + ca + "names.%s = x\n" % ("y" * 129), at + "names.%s: the certificate name after 'names.'" % ("y" * 129))
    start_fails(good + ca + "names. = x\n", "the certificate name after 'names.'")
    start_fails(good + ca + "names.svc-a = x\nnames.svc-a = y\n", "given more than once")
    start_fails(good + "names.svc-a = x\n", "need ca")
    # The same file with every key valid passes -t.
    bus.write_conf(good + "ca = %s/ca-cert.pem\nrequire_client_cert = yes\nmin_protocol = TLS1.3\n"
                          "ciphers = ECDHE+AESGCM\nhandshake_timeout = 2s\nmax_connections = 10\n"
                          "max_handshaking = 5\nnames.svc-a = svc-a, billing, a/b@c.d_e-f\n" % cdir)
    r = subprocess.run([lbtest.LEXBUSD, "-t", "-c", bus.conf], capture_output=True, text=True, timeout=20)
    check_eq(r.returncode, 0, "valid config: " + r.stdout + r.stderr)
    # And a port someone else holds stops a real start.
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    bus.write_conf(good.replace("127.0.0.1:1", "127.0.0.1:%d" % holder.getsockname()[1]))
    r = subprocess.run([lbtest.LEXBUSD, "-c", bus.conf], capture_output=True, text=True, timeout=20)
    holder.close()
    check(r.returncode != 0 and "cannot listen on" in r.stdout + r.stderr, r.stdout + r.stderr)
    bus.__exit__(None, None, None)


try:
    lbtest.main()
finally:
    import tlsutil
    tlsutil.cleanup()
