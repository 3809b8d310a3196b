"""tls-tcp through the real daemon, with certificates made by scripts/gen-certs.sh."""
import os
import signal
import socket
import ssl
import subprocess
import tempfile
import time

import lbtest
from lbtest import SRCDIR, Bus, Closed, RawClient, check, check_eq, test

GEN = os.path.join(SRCDIR, "scripts", "gen-certs.sh")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def certs(*services, out=None, force=False):
    out = out or tempfile.mkdtemp(prefix="lexbus-certs-")
    args = [GEN, "--out", out] + (["--force"] if force else []) + list(services)
    subprocess.run(args, check=True, capture_output=True)
    return out


def tls_bus(cdir, port, require=True, extra=""):
    return Bus(plugins="[plugin tls-tcp]\nlisten = 127.0.0.1:%d\ncert = %s/localhost-cert.pem\nkey = %s/localhost-key.pem\n"
                       "ca = %s/ca-cert.pem\nrequire_client_cert = %s\nhandshake_timeout = 1s\n%s"
               % (port, cdir, cdir, cdir, "yes" if require else "no", extra))


def tls_client(cdir, port, name=None, ca=None, host="localhost"):
    ctx = ssl.create_default_context(cafile=ca or os.path.join(cdir, "ca-cert.pem"))
    if name:
        ctx.load_cert_chain(os.path.join(cdir, name + "-cert.pem"), os.path.join(cdir, name + "-key.pem"))
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    s = ctx.wrap_socket(raw, server_hostname=host)
    return RawClient(s)


def served(connect, name):
    """True if a client made by connect() gets a REGISTER_ACK for name."""
    try:
        return connect().register(name).get("type") == "REGISTER_ACK"
    except (ssl.SSLError, Closed, ConnectionResetError, BrokenPipeError, OSError, lbtest.TestFailure):
        return False


def s_client(port, *args, input=b""):
    return subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-brief"] + list(args),
                          input=input, capture_output=True, timeout=15)


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
        s = [x for x in a.call("lexbus", "services")["data"] if x["name"] == "svc-a"][0]
        check_eq(s["sessions"][0]["transport"], "tls-tcp", "transport shown")


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


@test
def refusals_do_not_disturb_others():
    cdir = certs("svc-a")
    other_ca = certs("svc-a")          # a second, unrelated CA with the same service name
    port = free_port()
    with tls_bus(cdir, port) as bus:
        good = tls_client(cdir, port, "svc-a")
        good.register("svc-a")
        check(not served(lambda: tls_client(cdir, port, None), "svc-x"), "a client without a certificate was served")
        check(not served(lambda: tls_client(other_ca, port, "svc-a", ca=os.path.join(cdir, "ca-cert.pem")), "svc-a"),
              "a wrong-CA certificate was accepted")
        # TLS 1.1 and below.
        r = s_client(port, "-tls1_1", "-cert", os.path.join(cdir, "svc-a-cert.pem"), "-key", os.path.join(cdir, "svc-a-key.pem"))
        check(r.returncode != 0, "TLS 1.1 refused")
        # Plain TCP speaking the protocol, and a garbage ClientHello.
        for data in (lbtest.frame({"type": "REGISTER", "serviceName": "plain"}),
                     b"\x16\x03\x01\x00\x05garbage-garbage-garbage"):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(data)
            got = b""
            try:
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    got += chunk
            except (ConnectionResetError, socket.timeout):
                pass
            check(b"REGISTER_ACK" not in got, "not served in plain text")
            s.close()
        lbtest.wait_for(lambda: bus.logtext().count("TLS handshake refused") >= 4, what="refusals logged")
        check_eq(good.call("lexbus", "ping")["status"], "success", "the good client is still served")


def expired_client_cert(cdir, name):
    """A client certificate from the same CA whose validity ended in 2021."""
    d = tempfile.mkdtemp(prefix="lexbus-expired-")
    open(os.path.join(d, "index.txt"), "w").close()
    with open(os.path.join(d, "ca.cnf"), "w") as f:
        f.write("[ca]\ndefault_ca = x\n[x]\ndatabase = %s/index.txt\nnew_certs_dir = %s\nserial = %s/serial\n"
                "default_md = sha256\npolicy = p\nunique_subject = no\n[p]\ncommonName = supplied\n" % (d, d, d))
    open(os.path.join(d, "serial"), "w").write("1000\n")
    key, csr, crt = (os.path.join(d, n) for n in ("k.pem", "r.csr", "c.pem"))
    subprocess.run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key,
                    "-out", csr, "-subj", "/CN=" + name], check=True, capture_output=True)
    subprocess.run(["openssl", "ca", "-batch", "-config", os.path.join(d, "ca.cnf"), "-cert", os.path.join(cdir, "ca-cert.pem"),
                    "-keyfile", os.path.join(cdir, "ca-key.pem"), "-in", csr, "-out", crt,
                    "-startdate", "20200101000000Z", "-enddate", "20210101000000Z"], check=True, capture_output=True)
    return crt, key


@test
def expired_client_certificate_refused():
    cdir = certs("svc-a")
    crt, key = expired_client_cert(cdir, "svc-a")
    port = free_port()
    with tls_bus(cdir, port) as bus:
        def connect():
            ctx = ssl.create_default_context(cafile=os.path.join(cdir, "ca-cert.pem"))
            ctx.load_cert_chain(crt, key)
            return RawClient(ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5),
                                             server_hostname="localhost"))
        check(not served(connect, "svc-a"), "an expired certificate was accepted")
        lbtest.wait_for(lambda: "certificate expired" in bus.logtext() or "certificate has expired" in bus.logtext(),
                        what="expiry logged")
        check(served(lambda: tls_client(cdir, port, "svc-a"), "svc-a"), "a valid certificate still works")


@test
def stalled_handshake_frees_the_slot():
    cdir = certs("svc-a")
    port = free_port()
    with tls_bus(cdir, port) as bus:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        t = time.time()
        check_eq(s.recv(10), b"", "closed by the server")
        check(0.8 < time.time() - t < 5, "after handshake_timeout")
        check("handshake timed out" in bus.logtext(), "logged")
        s.close()


@test
def sighup_reloads_certificates_keeping_connections():
    cdir = certs("svc-a")
    port = free_port()
    with tls_bus(cdir, port) as bus:
        old = tls_client(cdir, port, "svc-a")
        old.register("svc-a")
        old_ca = open(os.path.join(cdir, "ca-cert.pem")).read()
        certs("svc-a", out=cdir, force=True)   # new CA, new server and client certificates
        bus.send_signal(signal.SIGHUP)
        lbtest.wait_for(lambda: "certificates reloaded" in bus.logtext(), what="reload")
        check_eq(old.call("lexbus", "ping")["status"], "success", "established connection kept")
        new = tls_client(cdir, port, "svc-a")
        check_eq(new.register("svc-a")["type"], "REGISTER_ACK", "new certificates in use")
        stale = os.path.join(tempfile.mkdtemp(), "old-ca.pem")
        open(stale, "w").write(old_ca)
        check(not served(lambda: tls_client(cdir, port, "svc-a", ca=stale), "svc-a"),
              "the client still trusts the server certificate signed by the old CA")


@test
def cli_over_tls_verifies_the_server_and_uses_client_certs():
    cdir = certs("cli-user")
    port = free_port()
    with tls_bus(cdir, port) as bus:
        base = ["--server", "tls://localhost:%d" % port, "--ca", os.path.join(cdir, "ca-cert.pem"),
                "--cert", os.path.join(cdir, "cli-user-cert.pem"), "--key", os.path.join(cdir, "cli-user-key.pem")]
        r = bus.cli(*(base + ["--as", "cli-user", "call", "lexbus", "ping"]))
        check_eq(r.returncode, 0, "call over mutual TLS: " + r.stderr)
        r = bus.cli(*(base + ["call", "lexbus", "ping"]))
        check_eq(r.returncode, 1, "a name the certificate does not carry")
        check("FORBIDDEN" in r.stderr, r.stderr)
        ip = ["--server", "tls://127.0.0.1:%d" % port] + base[2:] + ["--as", "cli-user", "call", "lexbus", "ping"]
        check_eq(bus.cli(*ip).returncode, 0, "server verified by its IP SAN")
        other = certs()
        r = bus.cli(*(["--server", "tls://localhost:%d" % port, "--ca", os.path.join(other, "ca-cert.pem")] + base[4:]
                      + ["--as", "cli-user", "call", "lexbus", "ping"]))
        check_eq(r.returncode, 3, "untrusted server certificate refused")
        r = bus.cli(*(["--server", "tls://localhost:%d" % port, "--insecure"] + base[4:] + ["--as", "cli-user", "call", "lexbus", "ping"]))
        check(r.returncode == 0 and "WARNING: --insecure" in r.stderr, "insecure works and warns: " + r.stderr)


@test
def bad_tls_config_stops_start_up():
    cdir = certs("svc-a")
    bus = Bus(start=False, plugins="[plugin tls-tcp]\nlisten = 127.0.0.1:1\ncert = %s/nope.pem\nkey = %s/localhost-key.pem\n" % (cdir, cdir))
    p = subprocess.run([lbtest.LEXBUSD, "-c", bus.conf], capture_output=True, text=True, timeout=20)
    check(p.returncode == 1 and "[plugin tls-tcp]" in p.stderr and "cannot load cert" in p.stderr, p.stderr)
    bus.write_conf(open(bus.conf).read().replace("nope.pem", "localhost-cert.pem") + "min_protocol = TLS1.0\n")
    p = subprocess.run([lbtest.LEXBUSD, "-c", bus.conf], capture_output=True, text=True, timeout=20)
    check(p.returncode == 1 and "min_protocol 'TLS1.0'" in p.stderr, p.stderr)
    bus.__exit__(None, None, None)


lbtest.main()
