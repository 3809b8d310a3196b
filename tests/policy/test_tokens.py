"""tokens through the real daemon: issue, authenticate, refuse, revoke, persist."""
import base64
import hashlib
import hmac
import json
import os
import time

import lbtest
from lbtest import Bus, check, check_eq, test

SECRET = "test-secret-0123456789-abcdefghij"


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def mint(claims, secret=SECRET, alg="HS256", kid="main", header=None):
    """A JWT made here, independently of the plugin (for bootstrap and attacks)."""
    h = header or {"alg": alg, "typ": "JWT", "kid": kid}
    signing = b64(json.dumps(h).encode()) + "." + b64(json.dumps(claims).encode())
    sig = b"" if alg == "none" else hmac.new(secret.encode(), signing.encode(), hashlib.sha256).digest()
    return signing + "." + b64(sig)


def claims(source, **kw):
    now = int(time.time())
    c = {"jti": "j-%s-%d" % (source, time.time_ns()), "type": "broker", "version": 1, "source": source, "sub": source,
         "target": "*", "operation": "*", "iat": now, "exp": now + 300}
    c.update(kw)
    return c


def token_bus(bus_dir=None):
    bus = Bus(bus="mode = production\n", start=False)
    keyf = os.path.join(bus.dir, "broker.key")
    with open(keyf, "w") as f:
        f.write("main:%s\nold:another-secret-0123456789-xyz\n" % SECRET)
    os.chmod(keyf, 0o600)
    bus.write_conf(open(bus.conf).read() + "[plugin tokens]\nkey_file = %s\nadmins = admin\n" % keyf)
    bus.start()
    return bus


def admin(bus):
    c = bus.raw()
    ack = c.register("admin", token=mint(claims("admin")))
    check_eq((ack["type"], ack.get("auth")), ("REGISTER_ACK", "token"), "admin bootstrap with a minted token")
    return c


def issue(a, **params):
    r = a.call("lexbus", "token.issue", params)
    check_eq(r["status"], "success", "issue: %r" % r)
    return r["data"]


def refused(bus, token, name="victim"):
    c = bus.raw()
    r = c.register(name, token=token)
    c.close()
    return r["error"]["code"] + ": " + r["error"]["message"] if r["type"] == "ERROR" else None


@test
def issued_token_authenticates_and_unauthenticated_is_refused():
    with token_bus() as bus:
        a = admin(bus)
        t = issue(a, target="spark", operation="notify", ttl=300, source="worker")
        check(len(t["jti"]) == 32 and t["exp"] > time.time(), "jti and exp")
        w = bus.raw()
        ack = w.register("worker", token=t["token"])
        check_eq((ack["type"], ack["auth"]), ("REGISTER_ACK", "token"), "worker authenticated by its token")
        r = bus.raw().register("nobody")
        check_eq(r["error"]["code"], "UNAUTHENTICATED", "no credentials")
        check("token" in refused(bus, t["token"], "impostor") and "issued to 'worker'" in refused(bus, t["token"], "impostor"),
              "a token names its service")
        v = a.call("lexbus", "token.verify", {"token": t["token"]})["data"]
        check_eq((v["valid"], v["claims"]["target"], v["claims"]["operation"], v["claims"]["type"]),
                 (True, "spark", "notify", "broker"), "verify")
        w2 = bus.raw()
        w2.register("worker", token=t["token"])
        r = w2.call("lexbus", "token.issue", {"target": "x", "operation": "y"})
        check_eq(r["error"]["code"], "FORBIDDEN", "only admins issue")


@test
def every_bad_token_is_refused_with_a_reason():
    with token_bus() as bus:
        now = int(time.time())
        cases = {
            "expired": mint(claims("victim", exp=now - 10)),
            "not yet valid": mint(claims("victim", iat=now + 3600)),
            "HS256 only": mint(claims("victim"), alg="none"),
            "bad signature": mint(claims("victim"), secret="wrong-secret-0123456789-abcdefgh"),
            "unknown key id": mint(claims("victim"), kid="nope"),
            "not a broker token": mint(claims("victim", type="access")),
            "malformed": "not.a.jwt",
            "at most 8192 bytes": "x" * 9000,
        }
        # Key confusion: an RS256 header over an HMAC made with the secret.
        cases["HS256 only (RS256)"] = mint(claims("victim"), header={"alg": "RS256", "typ": "JWT", "kid": "main"})
        for want, tok in cases.items():
            why = refused(bus, tok)
            check(why and why.startswith("UNAUTHENTICATED") and want.split(" (")[0] in why, "%s: got %r" % (want, why))
        check(refused(bus, mint(claims("victim", jti="ok-1"), secret="another-secret-0123456789-xyz", kid="old")) is None,
              "a second key (rotation) verifies by kid")


@test
def revoked_token_stops_working_at_once_and_claims_reach_recipients():
    with token_bus() as bus:
        a = admin(bus)
        spark = bus.raw()
        spark.register("spark", token=issue(a, target="*", operation="*", source="spark")["token"])
        t = issue(a, target="spark", operation="notify", source="sender")
        s = bus.raw()
        check_eq(s.register("sender", token=t["token"])["type"], "REGISTER_ACK", "registered")
        s.send({"type": "CALL", "id": "c1", "to": "spark", "method": "notify", "token": t["token"]})
        m = spark.recv()
        check_eq((m["token"]["jti"], m["token"]["source"]), (t["jti"], "sender"), "recipient gets verified claims")
        spark.send({"type": "RESPONSE", "id": "c1", "status": "success", "data": 1})
        s.recv()
        r = s.call("spark", "other", token=t["token"])
        check_eq(r["error"]["code"], "FORBIDDEN", "operation must match")
        r = s.call("lexbus", "ping", token=t["token"])
        check_eq(r["error"]["code"], "FORBIDDEN", "target must match")
        check_eq(a.call("lexbus", "token.revoke", {"jti": t["jti"]})["data"]["revoked"], True, "revoked")
        r = s.call("spark", "notify", token=t["token"])
        check("revoked" in r["error"]["message"] and r["error"]["code"] == "UNAUTHENTICATED", "revoked at once: %r" % r)
        check("revoked" in refused(bus, t["token"], "sender"), "cannot register with it either")


@test
def revocations_and_state_persist_across_restart():
    bus = token_bus()
    try:
        a = admin(bus)
        t = issue(a, target="x", operation="y", source="keeper", stateful=True)
        a.call("lexbus", "token.state.set", {"jti": t["jti"], "state": {"step": 2}})
        t2 = issue(a, target="x", operation="y", source="gone")
        a.call("lexbus", "token.revoke", {"jti": t2["jti"]})
        check_eq(bus.stop(), 0, "stopped")
        bus.start()
        a = admin(bus)
        check_eq(a.call("lexbus", "token.state.get", {"jti": t["jti"]})["data"]["state"], {"step": 2}, "state kept")
        check("revoked" in refused(bus, t2["token"], "gone"), "revocation kept")
        check_eq(bus.raw().register("keeper", token=t["token"])["type"], "REGISTER_ACK", "other tokens still work")
        a.call("lexbus", "token.state.delete", {"jti": t["jti"]})
        check_eq(a.call("lexbus", "token.state.get", {"jti": t["jti"]})["data"]["state"], None, "deleted")
    finally:
        bus.__exit__(None, None, None)


@test
def cli_issues_verifies_and_revokes():
    with token_bus() as bus:
        boot = mint(claims("admin"))
        r = bus.cli("--token", boot, "--as", "admin", "token", "issue", "--target", "spark", "--operation", "notify",
                    "--ttl", "300", "--source", "cli-svc")
        check_eq(r.returncode, 0, "issue: " + r.stderr)
        t = json.loads(r.stdout)
        ack = bus.raw().register("cli-svc", token=t["token"])
        check_eq((ack["type"], ack["auth"]), ("REGISTER_ACK", "token"), "the CLI-issued token authenticates a service")
        r = bus.cli("--token", boot, "--as", "admin", "token", "verify", t["token"])
        check_eq(json.loads(r.stdout)["claims"]["source"], "cli-svc", "verify")
        check_eq(bus.cli("--token", boot, "--as", "admin", "token", "revoke", t["jti"]).returncode, 0, "revoke")
        r = bus.cli("--token", boot, "--as", "admin", "token", "verify", t["token"])
        check_eq(r.returncode, 1, "revoked token fails verify")
        check("revoked" in json.loads(r.stderr)["error"]["message"], r.stderr)
        r = bus.cli("--as", "admin", "token", "verify", t["token"])
        check_eq(r.returncode, 1, "no token: the CLI cannot even register in production")


def exempt_bus(honour):
    bus = Bus(start=False)
    keyf = os.path.join(bus.dir, "broker.key")
    with open(keyf, "w") as f:
        f.write("main:%s\n" % SECRET)
    bus.write_conf(open(bus.conf).read() + "[plugin tokens]\nkey_file = %s\n[plugin ratelimit]\nwindow = 10s\nmax = 2\n"
                   "ceiling = 4\nhonour_exempt = %s\n" % (keyf, "yes" if honour else "no"))
    bus.start()
    return bus


def emits(c, token, n):
    out = []
    for i in range(n):
        c.send({"type": "EMIT", "id": "e%d" % i, "event": "tick", "ack": True, "token": token})
        out.append(c.recv()["type"])
    return out


@test
def rate_limit_exempt_tokens_honoured_only_when_configured_and_ceiling_holds():
    with exempt_bus(True) as bus:
        ex = mint(claims("fast", rateLimitExempt=True, target="broadcast", operation="tick"))
        plain = mint(claims("slow", target="broadcast", operation="tick"))
        fast, slow = bus.raw(), bus.raw()
        fast.register("fast", token=ex)
        slow.register("slow", token=plain)
        check_eq(emits(fast, ex, 5), ["ACK"] * 4 + ["ERROR"], "exempt: past max, stopped at the ceiling")
        check_eq(emits(slow, plain, 3), ["ACK", "ACK", "ERROR"], "not exempt: max applies")
    with exempt_bus(False) as bus:
        ex = mint(claims("fast", rateLimitExempt=True, target="broadcast", operation="tick"))
        fast = bus.raw()
        fast.register("fast", token=ex)
        check_eq(emits(fast, ex, 3), ["ACK", "ACK", "ERROR"], "exemption ignored unless honour_exempt = yes")


lbtest.main()
