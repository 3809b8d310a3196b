"""The shipped bus.conf.example, as quickstart.sh runs it (only its socket
and state file moved into a temporary directory): [plugin lua] with the
default scripts found from the build tree, so CRUD reaches the service
that declared the resource and lexbus.jsonlex answers, with no setup."""
import os
import re
import threading

import lbtest
from lbtest import Bus, check, check_eq, test
import luatest  # noqa: F401  (the harness's paths)


def example_bus():
    bus = Bus(unix=False, start=False)
    text = open(os.path.join(lbtest.SRCDIR, "bus.conf.example")).read()
    text = re.sub(r"(?m)^path = /tmp/lexbus\.sock$", "path = %s" % bus.sock, text)
    text = re.sub(r"(?m)^state_file = .*$", "state_file = %s" % os.path.join(bus.dir, "state.json"), text)
    check("[plugin lua]\n" in text, "bus.conf.example enables [plugin lua]")
    bus.write_conf(text)
    bus.start()
    return bus


@test
def crud_and_jsonlex_with_the_shipped_config():
    with example_bus() as bus:
        posts = bus.client("posts-service", methods=["posts.create"], resources=["posts"])
        seen = []

        def serve():
            m = posts.recv()
            seen.append(m)
            posts.send({"type": "RESPONSE", "id": m["id"], "to": m["from"], "status": "success",
                        "data": {"id": 1, "echo": m["params"]}})
        t = threading.Thread(target=serve)
        t.start()
        c = bus.client("app")
        c.send({"type": "CRUD", "id": "k1", "op": "create", "resource": "posts", "data": {"content": "hi"}})
        r = c.recv()
        t.join(10)
        check_eq((r["type"], r["id"], r["status"]), ("RESPONSE", "k1", "success"), "the CRUD answer: %r" % r)
        check_eq((seen[0]["method"], seen[0]["params"]["data"]), ("posts.create", {"content": "hi"}),
                 "the CALL crud.lua made")
        c.send({"type": "CRUD", "id": "k2", "op": "read", "resource": "nothing"})
        r = c.recv()
        check_eq((r["type"], r["status"], r["error"]["code"]), ("RESPONSE", "error", "SERVICE_NOT_FOUND"),
                 "an unknown resource: %r" % r)
        r = c.call("lexbus", "jsonlex", {"expr": {"$concat": ["a", "b"]}})
        check_eq((r.get("status"), r.get("data")), ("success", "ab"), "lexbus.jsonlex: %r" % r)


if __name__ == "__main__":
    lbtest.main()
