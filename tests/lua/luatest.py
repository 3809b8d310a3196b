"""Helpers for the lua plugin's tests: a bus with [plugin lua] over a
scripts folder the test writes, and strict JSON comparison."""
import json
import os
import tempfile

from lbtest import Bus, check_eq

HERE = os.path.dirname(os.path.abspath(__file__))


def scripts_dir(files=None):
    """A temporary scripts folder holding `files` ({name: text})."""
    d = tempfile.mkdtemp(prefix="lexbus-lua-")
    for name, text in (files or {}).items():
        path = os.path.join(d, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    return d


def write_script(d, name, text):
    with open(os.path.join(d, name), "w") as f:
        f.write(text)


def lua_bus(files=None, extra="", dir=None, **kw):
    """A bus with [plugin lua] over a folder of `files` (or `dir`)."""
    d = dir or scripts_dir(files)
    bus = Bus(plugins="[plugin lua]\ndir = %s\n%s" % (d, extra), **kw)
    bus.lua_dir = d
    return bus


def json_equal(a, b):
    """JSON equality as the corpus README defines it: numbers by value
    (1 == 1.0), booleans never equal to numbers, member order ignored."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return type(a) == type(b) and a == b


def load_cases():
    with open(os.path.join(HERE, "jsonlex-cases.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def method(c, name, params):
    """Calls lexbus.NAME; checks it succeeded and returns its data."""
    r = c.call("lexbus", name, params)
    check_eq(r.get("status"), "success", "%s answered: %r" % (name, r))
    return r["data"]


def answer(svc, data=None, error=None):
    """Answers the next CALL svc receives (with data, data(call) when it is
    a function, the CALL's params when None, or an error); returns the CALL."""
    call = svc.recv_type("CALL")
    resp = {"type": "RESPONSE", "id": call["id"], "to": call["from"]}
    if error:
        resp.update(status="error", error=error)
    else:
        resp.update(status="success", data=data(call) if callable(data) else data if data is not None else call.get("params"))
    svc.send(resp)
    return call
