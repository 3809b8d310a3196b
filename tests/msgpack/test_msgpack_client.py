"""liblexbus and the lexbus CLI speaking MessagePack (--encoding msgpack),
against a listener pinned to MessagePack (so JSON could not pass) and
against an auto one, mixed with JSON and raw MessagePack peers."""
import json
import os
import signal
import subprocess

import lbtest
from lbtest import LEXBUS_CLI, Bus, check, check_eq, test
from mputil import mp_client

MP = ("--encoding", "msgpack")


def pinned_bus():
    bus = Bus(start=False)
    bus.write_conf(open(bus.conf).read().replace("[plugin unix]\n", "[plugin unix]\nencoding = msgpack\n"))
    return bus.start()


def cli_bg(bus, *args):
    env = dict(os.environ, LEXBUS_URL="unix:" + bus.sock)
    return subprocess.Popen([LEXBUS_CLI] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def wait_service(bus, name):
    lbtest.wait_for(lambda: any(s["name"] == name for s in json.loads(bus.cli(*MP, "services").stdout or "[]")),
                    timeout=10, what="service %s" % name)


def stop(p):
    p.send_signal(signal.SIGTERM)
    return p.wait(10)


@test
def cli_serve_call_emit_listen_in_msgpack():
    with pinned_bus() as bus:
        srv = cli_bg(bus, *MP, "serve", "greeter", "hello", "--", "sh", "-c", 'read -r p; echo "{\\"hello\\": $p}"')
        ls = cli_bg(bus, *MP, "listen", "post:*")
        try:
            wait_service(bus, "greeter")
            r = bus.cli(*MP, "call", "greeter", "hello", '{"name":"ada","n":[9007199254740993,-1,0.5,"\\u00e9"]}')
            check_eq((r.returncode, json.loads(r.stdout)),
                     (0, {"hello": {"name": "ada", "n": [9007199254740993, -1, 0.5, "é"]}}), "call: " + r.stderr)
            r = bus.cli(*MP, "call", "greeter", "nope", "{}")
            check_eq((r.returncode, json.loads(r.stderr)["error"]["code"]), (1, "METHOD_NOT_FOUND"), "remote error")
            r = bus.cli(*MP, "call", "nobody", "x")
            check_eq(json.loads(r.stderr)["error"]["code"], "SERVICE_NOT_FOUND", "service not found")
            lbtest.wait_for(lambda: json.loads(bus.cli(*MP, "stats").stdout)["subscriptions"] >= 1,
                            what="listener subscribed")
            r = bus.cli(*MP, "emit", "post:created", '{"id":7,"tags":["a"]}', "--ack")
            check_eq((r.returncode, json.loads(r.stdout)), (0, {"delivered": 1}), "emit with ack")
            line = json.loads(ls.stdout.readline())
            check_eq((line["event"], line["payload"]), ("post:created", {"id": 7, "tags": ["a"]}), "listen output")
            # A raw MessagePack peer (Python's msgpack) calls the CLI's service.
            peer = mp_client(bus, "peer")
            r = peer.call("greeter", "hello", {"from": "python"})
            check_eq(r["data"], {"hello": {"from": "python"}}, "liblexbus answers a raw MessagePack caller")
        finally:
            check_eq(stop(srv), 0, "serve exits 0")
            stop(ls)
        # The pin is real: the same CLI speaking JSON gets nowhere.
        r = bus.cli("--timeout", "2000", "services")
        check(r.returncode != 0, "a JSON client is refused by a msgpack listener: %r" % (r,))


@test
def cli_msgpack_and_json_peers_on_an_auto_listener():
    with Bus() as bus:
        srv = cli_bg(bus, *MP, "serve", "mp-echo", "e", "--", "cat")
        try:
            wait_service(bus, "mp-echo")
            r = bus.cli("call", "mp-echo", "e", '{"x":[1,2,{"y":null}]}')
            check_eq((r.returncode, json.loads(r.stdout)), (0, {"x": [1, 2, {"y": None}]}), "JSON CLI -> msgpack CLI")
            js = bus.client("js-svc", methods=["m"])
            caller = cli_bg(bus, *MP, "call", "js-svc", "m", '{"q":1}')
            call = js.recv(timeout=10)
            check_eq(call["params"], {"q": 1}, "msgpack CLI -> JSON raw service")
            js.send({"type": "RESPONSE", "id": call["id"], "status": "success", "data": {"a": "b"}})
            out, _ = caller.communicate(timeout=10)
            check_eq((caller.returncode, json.loads(out)), (0, {"a": "b"}), "answer back")
        finally:
            stop(srv)
        r = bus.cli("--encoding", "cbor", "services")
        check_eq(r.returncode, 2, "an unknown encoding is a usage error")
        check(" msgpack" in r.stderr, r.stderr)


lbtest.main()
