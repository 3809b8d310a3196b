"""Helpers shared by the tls-tcp tests: certificates from scripts/gen-certs.sh
(in temporary folders), a bus with [plugin tls-tcp], TLS raw-wire clients."""
import os
import shutil
import socket
import ssl
import subprocess
import tempfile

import lbtest
from lbtest import SRCDIR, Bus, Closed, RawClient

GEN = os.path.join(SRCDIR, "scripts", "gen-certs.sh")
_tmp = []


def tmpdir(prefix):
    d = tempfile.mkdtemp(prefix=prefix)
    _tmp.append(d)
    return d


def cleanup():
    if not os.environ.get("LEXBUS_KEEP_TMP"):
        for d in _tmp:
            shutil.rmtree(d, ignore_errors=True)


def free_port(family=socket.AF_INET, host="127.0.0.1"):
    """A port nobody listens on (bound once with port 0, then released)."""
    s = socket.socket(family)
    s.bind((host, 0))
    p = s.getsockname()[1]
    s.close()
    return p


def have_ipv6():
    try:
        s = socket.socket(socket.AF_INET6)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


def certs(*services, out=None, force=False, days=None):
    """Runs scripts/gen-certs.sh; returns the output folder."""
    out = out or os.path.join(tmpdir("lexbus-certs-"), "certs")
    args = [GEN, "--out", out] + (["--force"] if force else []) + (["--days", str(days)] if days else []) + list(services)
    subprocess.run(args, check=True, capture_output=True)
    return out


def p(cdir, name):
    return os.path.join(cdir, name)


def tls_section(cdir, port, require=True, extra="", listen=None, timeout="1s"):
    listen = listen or ["127.0.0.1:%d" % port]
    text = "[plugin tls-tcp]\n" + "".join("listen = %s\n" % l for l in listen)
    text += "cert = %s\nkey = %s\nca = %s\nrequire_client_cert = %s\nhandshake_timeout = %s\n%s" % (
        p(cdir, "localhost-cert.pem"), p(cdir, "localhost-key.pem"), p(cdir, "ca-cert.pem"),
        "yes" if require else "no", timeout, extra)
    return text


def tls_bus(cdir, port, require=True, extra="", listen=None, bus="", timeout="1s"):
    return Bus(bus=bus, plugins=tls_section(cdir, port, require, extra, listen, timeout))


def client_ctx(cdir, name=None, ca=None, cert=None, key=None, maxver=None):
    ctx = ssl.create_default_context(cafile=ca or p(cdir, "ca-cert.pem"))
    if name:
        ctx.load_cert_chain(p(cdir, name + "-cert.pem"), p(cdir, name + "-key.pem"))
    elif cert:
        ctx.load_cert_chain(cert, key)
    if maxver:
        ctx.maximum_version = maxver
    return ctx


def tls_client(cdir, port, name=None, ca=None, host="localhost", addr="127.0.0.1", ctx=None, session=None,
               source=None, **kw):
    ctx = ctx or client_ctx(cdir, name, ca, **kw)
    raw = socket.create_connection((addr, port), timeout=5, source_address=(source, 0) if source else None)
    s = ctx.wrap_socket(raw, server_hostname=host, session=session)
    return RawClient(s)


def served(connect, name):
    """True if a client made by connect() gets a REGISTER_ACK for name."""
    try:
        c = connect()
        try:
            return c.register(name).get("type") == "REGISTER_ACK"
        finally:
            c.close()
    except (ssl.SSLError, Closed, ConnectionResetError, BrokenPipeError, OSError, lbtest.TestFailure):
        return False


def s_client(port, *args, input=b"", host="127.0.0.1"):
    """openssl s_client against the bus; returns CompletedProcess (text)."""
    r = subprocess.run(["openssl", "s_client", "-connect", "%s:%d" % (host, port), "-servername", "localhost"]
                       + list(args), input=input, capture_output=True, timeout=15)
    r.out = (r.stdout + r.stderr).decode("utf-8", "replace")
    return r


def read_all(sock, timeout=5.0):
    """Reads until EOF/reset; returns (bytes, how) with how in eof/reset/timeout."""
    sock.settimeout(timeout)
    got = b""
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                return got, "eof"
            got += chunk
    except ConnectionResetError:
        return got, "reset"
    except socket.timeout:
        return got, "timeout"


def refusals(bus):
    return bus.logtext().count("TLS handshake refused from")


def plugin_stats(bus):
    return bus.stats()["plugins"]["tls-tcp"]


def sign(cdir, cn, sans=None, subj=None, days=30, eku="clientAuth", start=None, end=None, ca_cert=None, ca_key=None):
    """A certificate from cdir's CA with any CN/SANs (gen-certs.sh always uses
    CN = SAN = service name).  Returns (cert, key) paths."""
    d = tmpdir("lexbus-sign-")
    key, csr, crt, ext = (os.path.join(d, n) for n in ("k.pem", "r.csr", "c.pem", "x.ext"))
    subprocess.run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key,
                    "-out", csr, "-subj", subj or "/CN=" + cn], check=True, capture_output=True)
    with open(ext, "w") as f:
        f.write("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\n" % eku)
        if sans:
            f.write("subjectAltName=" + ",".join(sans) + "\n")
    ca_cert = ca_cert or p(cdir, "ca-cert.pem")
    ca_key = ca_key or p(cdir, "ca-key.pem")
    if start or end:
        # `openssl x509 -req` cannot backdate: use `openssl ca` for explicit dates.
        open(os.path.join(d, "index.txt"), "w").close()
        with open(os.path.join(d, "serial"), "w") as f:
            f.write("1000\n")
        with open(os.path.join(d, "ca.cnf"), "w") as f:
            f.write("[ca]\ndefault_ca = x\n[x]\ndatabase = %s/index.txt\nnew_certs_dir = %s\nserial = %s/serial\n"
                    "default_md = sha256\npolicy = p\nunique_subject = no\ncopy_extensions = none\npreserve = yes\n[p]\n"
                    "commonName = optional\norganizationName = optional\norganizationalUnitName = optional\n"
                    % (d, d, d))
        subprocess.run(["openssl", "ca", "-batch", "-config", os.path.join(d, "ca.cnf"), "-cert", ca_cert,
                        "-keyfile", ca_key, "-in", csr, "-out", crt, "-extfile", ext,
                        "-startdate", start, "-enddate", end], check=True, capture_output=True)
    else:
        subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key, "-CAcreateserial",
                        "-days", str(days), "-out", crt, "-extfile", ext], check=True, capture_output=True)
    return crt, key
