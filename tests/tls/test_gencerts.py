"""scripts/gen-certs.sh: what it makes (names, SANs, purposes, chains,
modes, CA and leaf lifetimes), what it keeps on a re-run, that it leaves the
mode of an existing folder alone, and how it refuses bad arguments."""
import os
import stat
import subprocess

import lbtest
from lbtest import check, check_eq, test
from tlsutil import GEN, tmpdir


def gen(*args, cwd=None):
    return subprocess.run([GEN] + list(args), capture_output=True, text=True, timeout=60, cwd=cwd)


def x509(path, *args):
    r = subprocess.run(["openssl", "x509", "-in", path, "-noout"] + list(args), capture_output=True, text=True)
    check_eq(r.returncode, 0, "openssl x509 %s: %s" % (path, r.stderr))
    return r.stdout


def verify(ca, cert, purpose):
    return subprocess.run(["openssl", "verify", "-CAfile", ca, "-purpose", purpose, cert], capture_output=True,
                          text=True).returncode == 0


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@test
def makes_ca_server_and_client_certificates():
    out = os.path.join(tmpdir("lexbus-gc-"), "certs")
    r = gen("--out", out, "--days", "30", "order-service", "user.svc", "a@b")
    check_eq(r.returncode, 0, r.stderr)
    files = sorted(f for f in os.listdir(out) if f.endswith(".pem"))
    check_eq(files, sorted(["ca-cert.pem", "ca-key.pem", "localhost-cert.pem", "localhost-key.pem",
                            "order-service-cert.pem", "order-service-key.pem", "user.svc-cert.pem",
                            "user.svc-key.pem", "a@b-cert.pem", "a@b-key.pem"]), "files")
    check(not [f for f in os.listdir(out) if f.endswith((".tmp", ".csr", ".ext"))], "leftovers: %r" % os.listdir(out))
    check_eq(mode(out), 0o700, "directory mode")
    for f in files:
        want = 0o600 if f.endswith("-key.pem") else 0o644
        check_eq(mode(os.path.join(out, f)), want, f + " mode")
    ca = os.path.join(out, "ca-cert.pem")
    check("CA:TRUE" in x509(ca, "-ext", "basicConstraints"), "CA is a CA")
    srv = os.path.join(out, "localhost-cert.pem")
    san = x509(srv, "-ext", "subjectAltName")
    for want in ("DNS:localhost", "IP Address:127.0.0.1", "IP Address:0:0:0:0:0:0:0:1"):
        check(want in san, "server SAN %s missing: %s" % (want, san))
    check(verify(ca, srv, "sslserver"), "server certificate verifies for TLS servers")
    check(not verify(ca, srv, "sslclient"), "server certificate is not a client certificate")
    for svc in ("order-service", "user.svc", "a@b"):
        crt = os.path.join(out, svc + "-cert.pem")
        check("CN = %s" % svc in x509(crt, "-subject", "-nameopt", "oneline"), "CN of " + svc)
        check("DNS:%s" % svc in x509(crt, "-ext", "subjectAltName"), "SAN of " + svc)
        check(verify(ca, crt, "sslclient"), svc + " verifies as a client certificate")
        check(not verify(ca, crt, "sslserver"), svc + " is not a server certificate")
        # About 30 days.
        end = x509(crt, "-checkend", str(29 * 86400))
        check("will not expire" in end, svc + " expires too soon")
    r = subprocess.run(["openssl", "x509", "-in", os.path.join(out, "a@b-cert.pem"), "-noout", "-checkend",
                        str(31 * 86400)], capture_output=True, text=True)
    check(r.returncode != 0, "--days 30 gave a certificate valid beyond 31 days")
    # Keys match their certificates.
    for name in ("localhost", "order-service"):
        pub_c = subprocess.run(["openssl", "x509", "-in", os.path.join(out, name + "-cert.pem"), "-noout", "-pubkey"],
                               capture_output=True, text=True).stdout
        pub_k = subprocess.run(["openssl", "pkey", "-in", os.path.join(out, name + "-key.pem"), "-pubout"],
                               capture_output=True, text=True).stdout
        check(pub_c and pub_c == pub_k, name + " key matches its certificate")


@test
def rerun_keeps_the_ca_unless_forced():
    out = os.path.join(tmpdir("lexbus-gc-"), "certs")
    check_eq(gen("--out", out, "svc-a").returncode, 0, "first run")
    ca = open(os.path.join(out, "ca-cert.pem")).read()
    ca_key = open(os.path.join(out, "ca-key.pem")).read()
    r = gen("--out", out, "svc-b")
    check_eq(r.returncode, 0, r.stderr)
    check("keeping the CA" in r.stdout, r.stdout)
    check_eq(open(os.path.join(out, "ca-cert.pem")).read(), ca, "CA kept")
    check_eq(open(os.path.join(out, "ca-key.pem")).read(), ca_key, "CA key kept")
    cafile = os.path.join(out, "ca-cert.pem")
    check(verify(cafile, os.path.join(out, "svc-a-cert.pem"), "sslclient"), "earlier certificate still verifies")
    check(verify(cafile, os.path.join(out, "svc-b-cert.pem"), "sslclient"), "new certificate verifies")
    r = gen("--out", out, "--force", "svc-b")
    check_eq(r.returncode, 0, r.stderr)
    check(open(os.path.join(out, "ca-cert.pem")).read() != ca, "--force made a new CA")
    check(not verify(cafile, os.path.join(out, "svc-a-cert.pem"), "sslclient"), "old certificate no longer verifies")
    check("svc-a-cert.pem was issued by the previous CA" in r.stderr, "stale certificate reported: " + r.stderr)
    check(verify(cafile, os.path.join(out, "svc-b-cert.pem"), "sslclient"), "re-issued certificate verifies")
    check(verify(cafile, os.path.join(out, "localhost-cert.pem"), "sslserver"), "server certificate re-issued")
    # A folder the script did not create keeps its mode: loose modes are warned about.
    os.chmod(out, 0o755)
    r = gen("--out", out)
    check_eq(r.returncode, 0, "re-run without services: " + r.stderr)
    check_eq(mode(out), 0o755, "the mode of an existing folder is left alone")
    check("mode 755" in r.stderr and "warning" in r.stderr, "loose mode warned about: " + r.stderr)
    os.chmod(out, 0o700)
    r = gen("--out", out)
    check("warning" not in r.stderr, "a private folder is not warned about: " + r.stderr)
    # The default folder is ./certs.
    cwd = tmpdir("lexbus-gc-cwd-")
    check_eq(gen("svc-c", cwd=cwd).returncode, 0, "default --out")
    check(os.path.exists(os.path.join(cwd, "certs", "svc-c-cert.pem")), "wrote ./certs")


@test
def an_existing_shared_folder_is_not_locked():
    # Like --out /tmp: a world-writable sticky folder must stay usable by everyone.
    shared = tmpdir("lexbus-gc-shared-")
    os.chmod(shared, 0o1777)
    r = gen("--out", shared, "svc")
    check_eq(r.returncode, 0, r.stderr)
    check_eq(mode(shared), 0o1777, "mode of the existing folder")
    check("warning" in r.stderr and shared in r.stderr, "shared folder warned about: " + r.stderr)
    check_eq(mode(os.path.join(shared, "svc-key.pem")), 0o600, "keys stay private")
    # A folder it creates (with missing parents) is private; the parents are not made private.
    out = os.path.join(tmpdir("lexbus-gc-"), "a", "b", "certs")
    r = gen("--out", out)
    check_eq(r.returncode, 0, r.stderr)
    check_eq(mode(out), 0o700, "created folder")
    um = os.umask(0)
    os.umask(um)
    check_eq(mode(os.path.dirname(out)), 0o777 & ~um, "a parent it made follows the umask")


def checkend(path, days):
    """True if the certificate is still valid `days` days from now."""
    return subprocess.run(["openssl", "x509", "-in", path, "-noout", "-checkend", str(int(days * 86400))],
                          capture_output=True).returncode == 0


@test
def ca_lives_longer_than_its_certificates():
    out = os.path.join(tmpdir("lexbus-gc-"), "certs")
    r = gen("--out", out, "svc")
    check_eq(r.returncode, 0, r.stderr)
    ca = os.path.join(out, "ca-cert.pem")
    check(checkend(ca, 3649) and not checkend(ca, 3651), "default CA lifetime is 3650 days")
    check(checkend(os.path.join(out, "svc-cert.pem"), 364), "leaf: 365 days")
    check("outlive" not in r.stderr, "no warning by default: " + r.stderr)
    # A short-lived CA: leaves that would outlive it are warned about.
    out2 = os.path.join(tmpdir("lexbus-gc-"), "certs")
    r = gen("--out", out2, "--ca-days", "30", "--days", "90", "svc")
    check_eq(r.returncode, 0, r.stderr)
    check(checkend(os.path.join(out2, "ca-cert.pem"), 29) and not checkend(os.path.join(out2, "ca-cert.pem"), 31),
          "--ca-days 30")
    check("would outlive the CA" in r.stderr, "warning: " + r.stderr)
    r = gen("--out", out2, "--days", "10", "svc")
    check("outlive" not in r.stderr, "10-day leaves fit in the kept CA: " + r.stderr)
    # --ca-days does not touch a kept CA.
    before = open(os.path.join(out2, "ca-cert.pem")).read()
    r = gen("--out", out2, "--ca-days", "5000", "--days", "60")
    check_eq(open(os.path.join(out2, "ca-cert.pem")).read(), before, "kept CA unchanged by --ca-days")
    check("would outlive the CA" in r.stderr, "kept CA still too short: " + r.stderr)


@test
def bad_arguments_are_refused():
    d = tmpdir("lexbus-gc-")
    out = os.path.join(d, "certs")
    for args, want in ((["--bogus"], "unknown option"), (["--days"], "needs a value"), (["--out"], "needs a value"),
                       (["--days", "0"], "--days"), (["--days", "abc"], "--days"), (["--days", "-5"], "--days"),
                       (["--ca-days"], "needs a value"), (["--ca-days", "0"], "--ca-days"),
                       (["--ca-days=x"], "--ca-days"), (["--ca-days", "100000"], "--ca-days"),
                       (["bad name"], "not a usable service name"), (["a/b"], "not a usable service name"),
                       (["../x"], "not a usable service name"), (["-x"], "unknown option"),
                       (["--", "-x"], "not a usable service name"), (["x" * 65], "not a usable service name"),
                       (["ca"], "overwrite the CA"), (["localhost"], "overwrite the server certificate")):
        r = gen("--out", out, *args)
        check_eq(r.returncode, 2, "%r exit code (%s)" % (args, r.stderr))
        check(want in r.stderr, "%r: %s" % (args, r.stderr))
        check(not os.path.exists(out), "%r wrote files before refusing" % (args,))
    r = gen("--help")
    check(r.returncode == 0 and "--force" in r.stdout and "SERVICE" in r.stdout, "--help: " + r.stdout)
    # An unreadable CA is reported, not silently replaced.
    check_eq(gen("--out", out, "svc").returncode, 0, "setup")
    with open(os.path.join(out, "ca-cert.pem"), "w") as f:
        f.write("garbage\n")
    r = gen("--out", out, "svc")
    check(r.returncode != 0 and "failed" in r.stderr, "a corrupt CA: " + r.stderr)


try:
    lbtest.main()
finally:
    import tlsutil
    tlsutil.cleanup()
