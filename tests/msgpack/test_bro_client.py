"""The real Bro IPC client (ipc-bro 1.0.0, vendored in tests/msgpack/bro/,
MessagePack by default, its msgpackr installed with npm ci) against the real
daemon, with a JSON service on the same socket."""
import os
import shutil
import subprocess
import threading

import lbtest
from lbtest import Bus, Closed, TestFailure, check, check_eq, test

HERE = os.path.dirname(os.path.abspath(__file__))
BRO = os.path.join(HERE, "bro")


def node_modules():
    """msgpackr as package-lock.json pins it, installed once into a cache
    folder of the build tree (CI starts from a fresh machine)."""
    cache = os.environ.get("LEXBUS_NODE_CACHE") or os.path.join(lbtest.BUILDDIR, "tests", "node-cache", "bro")
    if not os.path.isdir(os.path.join(cache, "node_modules", "msgpackr")):
        os.makedirs(cache, exist_ok=True)
        for f in ("package.json", "package-lock.json"):
            shutil.copy(os.path.join(BRO, f), cache)
        r = subprocess.run(["npm", "ci", "--omit=optional", "--no-audit", "--no-fund", "--loglevel=error"],
                           cwd=cache, capture_output=True, text=True, timeout=300)
        check(r.returncode == 0, "npm ci failed:\n" + r.stdout + r.stderr)
    return os.path.join(cache, "node_modules")


def serve_db(c, stop):
    """db-service, a JSON client: answers `query` with the context it got;
    never answers `slow`; sends a HEARTBEAT when idle (the bus's heartbeat
    is short here)."""
    while not stop.is_set():
        try:
            m = c.recv(timeout=0.2)
        except TestFailure:
            c.send({"type": "HEARTBEAT", "from": "db-service"})
            continue
        except Closed:
            return
        if m.get("type") == "CALL" and m.get("method") == "query":
            c.send({"type": "RESPONSE", "id": m["id"], "from": "db-service", "to": m["from"], "status": "success",
                    "data": {"id": m["params"]["id"], "ctx": m["context"]}, "context": m["context"]})


def scenario(serializer):
    mods = node_modules()
    with Bus(heartbeat="500ms", call_timeout="1s", bus="max_depth = 5\n") as bus:
        db = bus.client("db-service", methods=["query", "slow"])
        stop = threading.Event()
        t = threading.Thread(target=serve_db, args=(db, stop), daemon=True)
        t.start()
        try:
            r = subprocess.run(["node", os.path.join(BRO, "scenario.js"), bus.sock] + ([serializer] if serializer else []),
                               capture_output=True, text=True, timeout=120, env=dict(os.environ, NODE_PATH=mods))
        finally:
            stop.set()
            t.join(5)
        steps = [l for l in r.stdout.splitlines() if l.startswith(("ok ", "FAIL "))]
        for l in steps:
            print("# " + l)
        check(r.returncode == 0 and r.stdout.rstrip().endswith("done"),
              "scenario failed (rc %d):\n%s\n%s" % (r.returncode, r.stdout[-3000:], r.stderr[-3000:]))
        check_eq(len([l for l in steps if l.startswith("ok ")]), 12 if serializer == "json" else 13, "steps passed")
        return bus.logtext()


@test
def bro_client_with_its_default_msgpack_serializer():
    log = scenario(None)
    # user-service, order-service (twice: it reconnected) and the pool's three sockets.
    check(log.count("speaks MessagePack") >= 6, "every Bro connection spoke MessagePack:\n" + log[-2000:])
    check_eq(log.count("speaks JSON"), 1, "db-service spoke JSON")


@test
def bro_client_with_serializer_json():
    log = scenario("json")
    check_eq(log.count("speaks MessagePack"), 0, "no MessagePack")
    check(log.count("speaks JSON") >= 7, "every connection spoke JSON:\n" + log[-2000:])


lbtest.main()
