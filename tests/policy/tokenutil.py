"""Broker tokens minted by the tests themselves, independently of the plugin
(for bootstrap and for attacks), shared by test_tokens.py and test_state.py."""
import base64
import hashlib
import hmac
import json
import time

SECRET = "test-secret-0123456789-abcdefghij"


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def mint(claims, secret=SECRET, alg="HS256", kid="main", header=None):
    """A JWT signed here with `secret` (HS256), or unsigned with alg none."""
    h = header or {"alg": alg, "typ": "JWT", "kid": kid}
    signing = b64(json.dumps(h).encode()) + "." + b64(json.dumps(claims).encode())
    sig = b"" if alg == "none" else hmac.new(secret.encode(), signing.encode(), hashlib.sha256).digest()
    return signing + "." + b64(sig)


def claims(source, **kw):
    """Claims of a session token for `source` (operation "register": it lets
    `source` REGISTER), valid for 300 s, overridable: give target and
    operation for a token that CALLs and EMITs carry instead."""
    now = int(time.time())
    c = {"jti": "j-%s-%d" % (source, time.time_ns()), "type": "broker", "version": 1, "source": source, "sub": source,
         "target": "lexbus", "operation": "register", "iat": now, "exp": now + 300}
    c.update(kw)
    return c


def token_bus_conf(admins="admin"):
    """A production lexbusd with [plugin tokens] (keyed with SECRET) and a
    [bus] state_file, configured but not started."""
    import os
    from lbtest import Bus
    bus = Bus(bus="mode = production\nstate_file = lexbus-state.json\n", start=False)
    keyf = os.path.join(bus.dir, "broker.key")
    with open(keyf, "w") as f:
        f.write("main:%s\n" % SECRET)
    os.chmod(keyf, 0o600)
    bus.write_conf(open(bus.conf).read() + "[plugin tokens]\nkey_file = %s\nadmins = %s\n" % (keyf, admins))
    return bus
