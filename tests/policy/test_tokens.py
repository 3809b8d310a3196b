"""tokens through the real daemon: issue, authenticate, refuse, revoke, persist."""
import json
import os
import subprocess
import time

import lbtest
from lbtest import Bus, check, check_eq, test

from tokenutil import SECRET, claims, mint


def token_bus_conf(admins="admin"):
    """A production bus.conf with [plugin tokens] (not started)."""
    bus = Bus(bus="mode = production\nstate_file = lexbus-state.json\n", start=False)
    keyf = os.path.join(bus.dir, "broker.key")
    with open(keyf, "w") as f:
        f.write("main:%s\nold:another-secret-0123456789-xyz\n" % SECRET)
    os.chmod(keyf, 0o600)
    bus.write_conf(open(bus.conf).read() + "[plugin tokens]\nkey_file = %s\nadmins = %s\n" % (keyf, admins))
    return bus


def token_bus():
    return token_bus_conf().start()


def admin(bus):
    c = bus.raw()
    ack = c.register("admin", token=mint(claims("admin", admin=True)))
    check_eq((ack["type"], ack.get("auth")), ("REGISTER_ACK", "token"), "admin bootstrap with a minted token")
    return c


def issue(a, **params):
    r = a.call("lexbus", "token.issue", params)
    check_eq(r["status"], "success", "issue: %r" % r)
    return r["data"]


def session_token(a, name, **kw):
    """A session token for `name`, issued by the admin session `a`."""
    return issue(a, operation="register", source=name, **kw)["token"]


def refused(bus, token, name="victim"):
    c = bus.raw()
    r = c.register(name, token=token)
    c.close()
    return r["error"]["code"] + ": " + r["error"]["message"] if r["type"] == "ERROR" else None


@test
def issued_token_authenticates_and_unauthenticated_is_refused():
    with token_bus() as bus:
        a = admin(bus)
        t = issue(a, operation="register", source="worker", ttl=300)
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
                 (True, "lexbus", "register", "broker"), "verify")
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
        spark.register("spark", token=session_token(a, "spark"))
        t = issue(a, target="spark", operation="notify", source="sender")
        s = bus.raw()
        # The session has its own token: revoking t refuses t, the session stays.
        session = session_token(a, "sender")
        check_eq(s.register("sender", token=session)["type"], "REGISTER_ACK", "registered")
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
        t = issue(a, operation="register", source="keeper", stateful=True)
        a.call("lexbus", "token.state.set", {"jti": t["jti"], "state": {"step": 2}})
        t2 = issue(a, operation="register", source="gone")
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
        boot = mint(claims("admin", admin=True))
        r = bus.cli("--token", boot, "--as", "admin", "token", "issue", "--operation", "register", "--ttl", "300",
                    "--source", "cli-svc")
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


@test
def a_narrow_token_is_never_an_identity():
    """`--as ops token issue --target spark --operation notify` must not give
    its holder the session of ops (an admin), nor `--source mailer` that of
    mailer: only a session token (operation "register") authenticates a
    REGISTER."""
    with token_bus_conf(admins="admin, ops").start() as bus:
        ops = bus.raw()
        check_eq(ops.register("ops", token=mint(claims("ops", admin=True)))["type"], "REGISTER_ACK", "ops session")
        narrow = issue(ops, target="spark", operation="notify")
        c = ops.call("lexbus", "token.verify", {"token": narrow["token"]})["data"]["claims"]
        check("source" not in c and "sub" not in c, "source does not default to the issuer: %r" % c)
        why = refused(bus, narrow["token"], "ops")
        check(why and why.startswith("UNAUTHENTICATED") and "not a session token" in why,
              "a narrow token does not register its issuer: %r" % why)
        for params in ({"target": "spark", "operation": "notify", "source": "mailer"},
                       {"target": "*", "operation": "*", "source": "mailer"}):
            why = refused(bus, issue(ops, **params)["token"], "mailer")
            check(why and "not a session token" in why, "%r does not register mailer: %r" % (params, why))
        why = refused(bus, mint(claims("mailer", target="*", operation="*")), "mailer")
        check(why and "not a session token" in why, "nor does a minted */* token: %r" % why)

        session = session_token(ops, "mailer")
        c = ops.call("lexbus", "token.verify", {"token": session})["data"]["claims"]
        check_eq((c["operation"], c["source"], c["target"]), ("register", "mailer", "lexbus"), "session claims")
        check("issued to 'mailer'" in (refused(bus, session, "impostor") or ""), "a session token names its service")
        mailer = bus.raw()
        check_eq(mailer.register("mailer", token=session)["auth"], "token", "the session token registers mailer")
        r = mailer.call("lexbus", "token.issue", {"target": "x", "operation": "y"})
        check_eq(r["error"]["code"], "FORBIDDEN", "a session token confers no admin powers")
        r = mailer.call("spark", "notify", token=session)
        check(r["error"]["code"] == "FORBIDDEN" and "session token" in r["error"]["message"],
              "a session token is not a message token: %r" % r)

        spark = bus.client("spark", methods=["notify"], token=mint(claims("spark")))
        other = bus.client("other", token=mint(claims("other")))
        bound = issue(ops, target="spark", operation="notify", source="mailer")
        r = other.call("spark", "notify", token=bound["token"])
        check(r["error"]["code"] == "FORBIDDEN" and "source" in r["error"]["message"],
              "a token for source mailer is mailer's only: %r" % r)
        for who, tok, src in ((mailer, bound["token"], "mailer"), (other, narrow["token"], None)):
            who.send({"type": "CALL", "id": "n1", "to": "spark", "method": "notify", "token": tok})
            m = spark.recv()
            check_eq((m["from"], m["token"]["operation"], m["token"].get("source")), (who.name, "notify", src),
                     "the recipient gets the verified claims")
            spark.send({"type": "RESPONSE", "id": "n1", "status": "success", "data": 1})
            check_eq(who.recv()["status"], "success", "answered")


@test
def admin_powers_come_only_from_an_admin_session_token():
    with token_bus_conf(admins="admin, ops").start() as bus:
        a = admin(bus)
        r = a.call("lexbus", "token.issue", {"operation": "register", "source": "ops"})
        check(r["status"] == "error" and "admin" in r["error"]["message"],
              "a session token for an admin needs \"admin\": true: %r" % r)
        for params in ({"operation": "register"}, {"operation": "register", "source": "*"},
                       {"operation": "register", "source": "mailer", "target": "spark"},
                       {"target": "spark", "operation": "notify", "admin": True}):
            r = a.call("lexbus", "token.issue", params)
            check_eq(r.get("error", {}).get("code"), "INVALID_MESSAGE", "%r: %r" % (params, r))
        ops = bus.raw()
        check_eq(ops.register("ops", token=session_token(a, "ops", admin=True))["auth"], "token", "admin session")
        check_eq(ops.call("lexbus", "token.issue", {"target": "x", "operation": "y"})["status"], "success",
                 "an admin session token confers the admin's powers")
        # A token minted without the admin claim: the name, not the powers.
        weak = bus.raw()
        check_eq(weak.register("ops", token=mint(claims("ops")))["type"], "REGISTER_ACK", "registered")
        r = weak.call("lexbus", "token.issue", {"target": "x", "operation": "y"})
        check(r["error"]["code"] == "FORBIDDEN" and "admin" in r["error"]["message"], "no admin claim: %r" % r)
        check_eq(weak.call("lexbus", "token.revoke", {"jti": "x"})["error"]["code"], "FORBIDDEN", "revoke either")


@test
def cli_carries_a_narrow_token_on_its_call_and_a_session_token_on_register():
    bus = token_bus_conf()
    bus.write_conf(open(bus.conf).read() + "peercred_uids = self\n")
    with bus.start():
        a = admin(bus)
        spark = bus.client("spark", methods=["notify"])
        narrow = issue(a, target="spark", operation="notify", source="worker")
        env = dict(os.environ, LEXBUS_URL="unix:" + bus.sock)
        for tok, jti in ((narrow["token"], narrow["jti"]), (session_token(a, "worker"), None)):
            p = subprocess.Popen([lbtest.LEXBUS_CLI, "--token", tok, "--as", "worker", "call", "spark", "notify", "{}"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            m = spark.recv(10)
            # A narrow token: the CLI registers by peer credentials and its CALL carries the token.
            # A session token: the REGISTER carries it, the CALL does not.
            check_eq((m["from"], m.get("token", {}).get("jti")), ("worker", jti), "what the CALL carried")
            spark.send({"type": "RESPONSE", "id": m["id"], "status": "success", "data": {"ok": 1}})
            out, err = p.communicate(timeout=15)
            check_eq((p.returncode, json.loads(out or "null")), (0, {"ok": 1}), "answered: " + err)


OLD_SECRET = "another-secret-0123456789-xyz"


def reload(bus, conf=None, keys=None):
    """bus.reload() after writing a new key file (when given)."""
    if keys is not None:
        with open(os.path.join(bus.dir, "broker.key"), "w") as f:
            f.write(keys)
    return bus.reload(conf)


@test
def sighup_applies_keys_admins_and_peercred_uids_to_new_and_open_sessions():
    bus = token_bus_conf(admins="admin, ops")
    bus.write_conf(open(bus.conf).read() + "peercred_uids = self\n")
    with bus.start():
        conf = open(bus.conf).read()
        a = admin(bus)
        old = bus.raw()
        check_eq(old.register("w-old", token=mint(claims("w-old"), secret=OLD_SECRET, kid="old"))["auth"], "token",
                 "a session signed with the key about to be removed")
        kept = bus.raw()
        two_hours = claims("w-main", exp=int(time.time()) + 7200)
        check_eq(kept.register("w-main", token=mint(two_hours))["auth"], "token", "a session signed with main")
        ops = bus.raw()
        check_eq(ops.register("ops", token=mint(claims("ops", admin=True)))["auth"], "token", "ops, an admin")
        local = bus.client("local")
        check_eq(local.name, "local", "a session by peer credentials")

        log = reload(bus, conf.replace("admins = admin, ops", "admins = admin").replace("peercred_uids = self\n", ""),
                     keys="main:%s\n" % SECRET)
        check("reload failed" not in log, log)
        got = old.expect_closed(timeout=3)
        check(got and got[-1]["error"]["code"] == "UNAUTHENTICATED" and "key 'old'" in got[-1]["error"]["message"],
              "the session of the removed key is closed, told why: %r" % got)
        got = local.expect_closed(timeout=3)
        check(got and got[-1]["error"]["code"] == "UNAUTHENTICATED" and "peercred_uids" in got[-1]["error"]["message"],
              "the peer-credential session of a removed uid is closed: %r" % got)
        check_eq(kept.call("lexbus", "ping")["status"], "success", "a session with a kept key stays")
        why = refused(bus, mint(claims("w-old"), secret=OLD_SECRET, kid="old"), "w-old")
        check(why and "unknown key id" in why, "the removed key no longer verifies: %r" % why)
        r = ops.call("lexbus", "token.issue", {"target": "x", "operation": "y"})
        check_eq(r.get("error", {}).get("code"), "FORBIDDEN", "a removed admin no longer issues: %r" % r)
        check_eq(a.call("lexbus", "token.issue", {"target": "x", "operation": "y"})["status"], "success", "admin does")
        r = bus.raw().register("local")
        check_eq(r.get("error", {}).get("code"), "UNAUTHENTICATED", "peercred_uids removed: no token, no session")

        # A reload that cannot be applied keeps everything as it was, and says why.
        log = reload(bus, keys="main:short\n")
        check("reload failed" in log and "shorter than 16 bytes" in log, "refused with the reason: %s" % log)
        check_eq(refused(bus, mint(claims("w-2")), "w-2"), None, "the old keys still verify")
        text = open(bus.conf).read()
        with open(os.path.join(bus.dir, "broker.key"), "w") as f:
            f.write("main:%s\n" % SECRET)
        log = reload(bus, text + "max_ttl = 1h\nstate_file = other.json\n")
        check("reload failed" in log and "state_file" in log and "restart" in log, "state_file needs a restart: %s" % log)
        check_eq(a.call("lexbus", "token.issue", {"target": "x", "operation": "y", "ttl": 7200})["status"], "success",
                 "max_ttl of the refused reload not applied")
        log = reload(bus, text + "max_ttl = 1h\n")
        check("reload failed" not in log, log)
        got = kept.expect_closed(timeout=3)
        check(got and "max_ttl" in got[-1]["error"]["message"], "lowered max_ttl: longer-lived sessions end: %r" % got)
        r = a.call("lexbus", "token.issue", {"target": "x", "operation": "y", "ttl": 7200})
        check_eq(r.get("error", {}).get("code"), "INVALID_MESSAGE", "max_ttl = 1h applies to token.issue")


def kill_and_restart(bus):
    """SIGKILL: nothing the daemon had not yet written survives."""
    bus.proc.kill()
    bus.proc.wait()
    bus.start()


@test
def issue_refuses_ttl_out_of_range_before_any_arithmetic():
    with token_bus() as bus:
        a = admin(bus)
        # 18446744073709552 * 1000 wraps to 384 in 64 bits: it must not pass as 384 ms.
        for ttl in (18446744073709552, 2 ** 63 - 1, 86401, 0, -1, "300", 1.5):
            r = a.call("lexbus", "token.issue", {"target": "x", "operation": "y", "ttl": ttl})
            check_eq(r.get("error", {}).get("code"), "INVALID_MESSAGE", "ttl %r: %r" % (ttl, r))
            check("1 to 86400 seconds" in r["error"]["message"], r["error"]["message"])
        t = issue(a, target="x", operation="y", ttl=86400)
        check(t["exp"] - time.time() < 86400 + 5, "max_ttl itself is accepted: %r" % t)


@test
def verify_honours_nbf_and_requires_integer_iat_exp_within_max_ttl():
    with token_bus() as bus:
        now = int(time.time())
        cases = {
            "not yet valid (nbf)": mint(claims("victim", nbf=now + 3600)),
            "nbf must be an integer": mint(claims("victim", nbf="soon")),
            "token lacks iat": mint({k: v for k, v in claims("victim").items() if k != "iat"}),
            "iat must be an integer": mint(claims("victim", iat=str(now))),
            "iat must be an integer (float)": mint(claims("victim", iat=now + 0.5)),
            "exp must be an integer": mint(claims("victim", exp=float(now + 300))),
            "lifetime": mint(claims("victim", iat=now, exp=now + 86400 + 60)),
            "not yet valid (issued in the future)": mint(claims("victim", iat=now + 120)),
        }
        for want, tok in cases.items():
            why = refused(bus, tok)
            check(why and why.startswith("UNAUTHENTICATED") and want.split(" (")[0] in why, "%s: got %r" % (want, why))
        for ok in (mint(claims("victim", nbf=now + 10)), mint(claims("victim", nbf=now - 10)),
                   mint(claims("victim", iat=now + 10))):
            check(refused(bus, ok) is None, "small clock skew is tolerated: %r" % refused(bus, ok))
        a = admin(bus)
        r = a.call("lexbus", "token.verify", {"token": cases["lifetime"]})
        check_eq(r["error"]["code"], "UNAUTHENTICATED", "token.verify applies the same rules")


@test
def revocation_is_durable_before_it_is_acknowledged():
    bus = token_bus()
    try:
        a = admin(bus)
        t = issue(a, operation="register", source="gone")
        check_eq(a.call("lexbus", "token.revoke", {"jti": t["jti"]})["data"]["revoked"], True, "revoked")
        kill_and_restart(bus)
        check("revoked" in (refused(bus, t["token"], "gone") or ""), "revocation survives SIGKILL right after the ack")
        mode = os.stat(os.path.join(bus.dir, "lexbus-state.json")).st_mode & 0o777
        check_eq(oct(mode), oct(0o600), "state file mode")
    finally:
        bus.__exit__(None, None, None)


@test
def revoking_a_token_closes_the_sessions_it_authenticated():
    with token_bus() as bus:
        a = admin(bus)
        t = issue(a, operation="register", source="worker")
        w1, w2 = bus.raw(), bus.raw()
        check_eq(w1.register("worker", token=t["token"])["type"], "REGISTER_ACK", "first session")
        check_eq(w2.register("worker-2", token=session_token(a, "worker-2"))["type"],
                 "REGISTER_ACK", "a session with another token")
        r = a.call("lexbus", "token.revoke", {"jti": t["jti"]})
        check_eq(r["data"]["revoked"], True, "the revoker gets its answer")
        got = w1.expect_closed(timeout=2.0)
        check(got and got[-1]["type"] == "ERROR" and got[-1]["error"]["code"] == "UNAUTHENTICATED"
              and "token revoked" in got[-1]["error"]["message"], "told why before the close: %r" % got)
        check_eq(w2.call("lexbus", "ping")["type"], "RESPONSE", "other sessions are untouched")
        check_eq(a.call("lexbus", "ping")["type"], "RESPONSE", "the admin's session is untouched")
        # Revoking the token of one's own session: the answer first, then the close.
        own = claims("admin", admin=True)
        b = bus.raw()
        check_eq(b.register("admin", token=mint(own))["type"], "REGISTER_ACK", "second admin session")
        check_eq(b.call("lexbus", "token.revoke", {"jti": own["jti"]})["data"]["revoked"], True, "answered")
        got = b.expect_closed(timeout=2.0)
        check(got and "token revoked" in got[-1]["error"]["message"], "then closed: %r" % got)


@test
def a_revocation_outlives_a_token_issued_slightly_in_the_future():
    """iat may be up to 30 s ahead (clock skew between issuers): the
    revocation must be kept until such a token has expired too."""
    bus = token_bus_conf()
    # A short max_ttl; the admin comes in by peer credentials (its own token could not outlive 2 s).
    bus.write_conf(open(bus.conf).read() + "max_ttl = 2s\npeercred_uids = self\n")
    bus.start()
    with bus:
        a = bus.client("admin")
        now = int(time.time())
        tok = mint(claims("x", jti="J-skew", iat=now + 25, exp=now + 27))
        check_eq(a.call("lexbus", "token.verify", {"token": tok})["status"], "success", "valid before the revoke")
        check_eq(a.call("lexbus", "token.revoke", {"jti": "J-skew"})["status"], "success", "revoke")
        time.sleep(3.5)   # past now + max_ttl: a revocation kept only that long is purged
        a.call("lexbus", "token.revoke", {"jti": "other"})   # a durable write purges expired entries
        r = a.call("lexbus", "token.verify", {"token": tok})
        check(r["status"] == "error" and "revoked" in r["error"]["message"], "still revoked: %r" % r)


@test
def a_session_ends_when_its_token_expires():
    with token_bus() as bus:
        a = admin(bus)
        t = issue(a, operation="register", source="brief", ttl=2)
        w = bus.raw()
        check_eq(w.register("brief", token=t["token"])["type"], "REGISTER_ACK", "registered")
        start = time.time()
        got = w.expect_closed(timeout=5.0)
        check(got and got[-1]["type"] == "ERROR" and got[-1]["error"]["code"] == "UNAUTHENTICATED"
              and "expired" in got[-1]["error"]["message"], "told why: %r" % got)
        check(time.time() - start < 3.5 and time.time() >= t["exp"] - 0.05, "closed when exp passed")
        check_eq(a.call("lexbus", "ping")["type"], "RESPONSE", "the admin's session is untouched")


def check_conf(bus, keys_text=None, mode=0o600):
    """`lexbusd -t` on a production bus.conf with [plugin tokens]."""
    keyf = os.path.join(bus.dir, "broker.key")
    if keys_text is not None:
        with open(keyf, "w") as f:
            f.write(keys_text)
        os.chmod(keyf, mode)
    return subprocess.run([lbtest.LEXBUSD, "-t", "-c", bus.conf], capture_output=True, text=True, timeout=30)


@test
def check_only_accepts_a_production_config_with_tokens():
    bus = token_bus_conf()
    try:
        r = check_conf(bus)
        check_eq(r.returncode, 0, "lexbusd -t: " + r.stdout + r.stderr)
        check("configuration OK" in r.stdout, r.stdout)
    finally:
        bus.__exit__(None, None, None)


@test
def key_file_mistakes_are_load_errors_with_file_and_line():
    bus = token_bus_conf()
    try:
        keyf = os.path.join(bus.dir, "broker.key")
        cases = {
            "broker.key:2: line is longer than 1023 bytes": "main:%s\nbig:%s\n" % (SECRET, "s" * 1100),
            "broker.key:17: more than 16 keys": "".join("k%d:%s\n" % (i, SECRET) for i in range(17)),
            "broker.key:3: key id 'main' is already used on line 1": "main:%s\nother:%s\nmain:%s\n" % (SECRET, SECRET, SECRET),
            "broker.key:1: key 'short' is shorter than 16 bytes": "short:abc\n",
        }
        for want, text in cases.items():
            r = check_conf(bus, text)
            check(r.returncode != 0 and want in r.stderr, "%s: rc %d, %s" % (want, r.returncode, r.stderr))
            check(SECRET not in r.stderr, "no secret in the error")
        longest = "main:" + "s" * 1018   # 1023 bytes: the longest line there is room for
        for text in (longest + "\nother:%s\n" % SECRET, longest):
            r = check_conf(bus, text)
            check_eq(r.returncode, 0, "a 1023-byte line, with or without a newline: " + r.stderr)
        r = check_conf(bus, "main:%s\n" % SECRET, mode=0o644)
        check(r.returncode == 0 and "broker.key is readable or writable by group or others" in r.stderr and "chmod 600" in r.stderr,
              "warning for a readable key file: %s" % r.stderr)
        r = check_conf(bus, "main:%s\n" % SECRET, mode=0o600)
        check(r.returncode == 0 and "by group or others" not in r.stderr, "no warning at 0600: " + r.stderr)
    finally:
        bus.__exit__(None, None, None)


@test
def signatures_are_checked_exactly():
    with token_bus() as bus:
        good = mint(claims("victim"))
        head, body, sig = good.split(".")
        abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        flip = "A" if sig[-1] != "A" else "E"
        alt = abc[abc.index(sig[-1]) + 1]   # the same 32 bytes with non-zero padding bits
        cases = {
            "last character changed": "%s.%s.%s" % (head, body, sig[:-1] + flip),
            "non-canonical base64": "%s.%s.%s" % (head, body, sig[:-1] + alt),
            "truncated": "%s.%s.%s" % (head, body, sig[:-2]),
            "extended": "%s.%s.%sAA" % (head, body, sig),
            "empty": "%s.%s." % (head, body),
            "extra segment": "%s.%s.%s.%s" % (head, body, sig, sig),
            "padded": "%s.%s.%s=" % (head, body, sig),
        }
        for what, tok in cases.items():
            why = refused(bus, tok)
            check(why and why.startswith("UNAUTHENTICATED"), "%s: got %r" % (what, why))
        check(refused(bus, good) is None, "the untouched token verifies")


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
        fast.register("fast", token=mint(claims("fast")))
        slow.register("slow", token=mint(claims("slow")))
        check_eq(emits(fast, ex, 5), ["ACK"] * 4 + ["ERROR"], "exempt: past max, stopped at the ceiling")
        check_eq(emits(slow, plain, 3), ["ACK", "ACK", "ERROR"], "not exempt: max applies")
    with exempt_bus(False) as bus:
        ex = mint(claims("fast", rateLimitExempt=True, target="broadcast", operation="tick"))
        fast = bus.raw()
        fast.register("fast", token=mint(claims("fast")))
        check_eq(emits(fast, ex, 3), ["ACK", "ACK", "ERROR"], "exemption ignored unless honour_exempt = yes")


@test
def only_admins_reload_a_production_bus():
    """Issue 8 item 2: methods that change the bus are admin-only in
    production; the refusal names the method."""
    with token_bus() as bus:
        a = admin(bus)
        w = bus.raw()
        check_eq(w.register("worker", token=session_token(a, "worker"))["type"], "REGISTER_ACK", "a plain session")
        r = w.call("lexbus", "reload")
        check(r["status"] == "error" and r["error"]["code"] == "FORBIDDEN" and "reload" in r["error"]["message"],
              "a non-admin session may not reload: %r" % r)
        check_eq(w.call("lexbus", "ping")["status"], "success", "other methods stay open to it")
        r = a.call("lexbus", "reload")
        check_eq(r["status"], "success", "the admin session reloads: %r" % r)
        # A token minted for an admin name without the admin claim: the name only.
        o = bus.raw()
        check_eq(o.register("admin", token=mint(claims("admin")))["type"], "REGISTER_ACK", "admin, no claim")
        check_eq(o.call("lexbus", "reload")["error"]["code"], "FORBIDDEN", "no admin powers without the claim")


lbtest.main()
