"""The lexbus CLI against the real daemon: the README's tour, exit codes, errors."""
import json
import os
import signal
import subprocess
import time

import lbtest
from lbtest import LEXBUS_CLI, Bus, check, check_eq, test


def cli_bg(bus, *args):
    env = dict(os.environ, LEXBUS_URL="unix:" + bus.sock)
    return subprocess.Popen([LEXBUS_CLI] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def wait_service(bus, name):
    lbtest.wait_for(lambda: any(s["name"] == name for s in json.loads(bus.cli("services").stdout)),
                    what="service %s" % name)


@test
def call_serve_and_errors():
    with Bus() as bus:
        srv = cli_bg(bus, "serve", "greeter", "hello", "--", "sh", "-c", 'read p; echo "{\\"hello\\": $p}"')
        try:
            wait_service(bus, "greeter")
            r = bus.cli("call", "greeter", "hello", '{"name":"ada"}')
            check_eq((r.returncode, json.loads(r.stdout)), (0, {"hello": {"name": "ada"}}), "call")
            r = bus.cli("call", "greeter", "nope", "{}")
            check_eq(r.returncode, 1, "remote error exit")
            check_eq(json.loads(r.stderr)["error"]["code"], "METHOD_NOT_FOUND", "stderr JSON")
            r = bus.cli("call", "nobody", "x")
            check_eq(json.loads(r.stderr)["error"]["code"], "SERVICE_NOT_FOUND", "service not found")
        finally:
            srv.send_signal(signal.SIGTERM)
            check_eq(srv.wait(10), 0, "serve exits 0 on SIGTERM")


@test
def serve_reports_command_failure_and_plain_text():
    with Bus() as bus:
        bad = cli_bg(bus, "serve", "failer", "f", "--", "sh", "-c", "echo broken >&2; exit 3")
        txt = cli_bg(bus, "serve", "texter", "t", "--", "echo", "plain words")
        try:
            wait_service(bus, "failer")
            wait_service(bus, "texter")
            r = bus.cli("call", "failer", "f")
            e = json.loads(r.stderr)["error"]
            check_eq((r.returncode, e["code"]), (1, "EXECUTION_FAILED"), "failure")
            check("exited with 3" in e["message"] and "broken" in e["message"], e["message"])
            r = bus.cli("call", "texter", "t")
            check_eq(json.loads(r.stdout), "plain words", "non-JSON stdout becomes a string")
            # Concurrent calls each run their own command.
            procs = [cli_bg(bus, "call", "texter", "t") for _ in range(5)]
            check(all(p.wait(15) == 0 for p in procs), "concurrent calls")
        finally:
            bad.send_signal(signal.SIGTERM)
            txt.send_signal(signal.SIGTERM)
            bad.wait(10)
            txt.wait(10)


@test
def emit_ack_and_listen_patterns():
    with Bus() as bus:
        ls = cli_bg(bus, "listen", "post:*", "content:>")
        try:
            lbtest.wait_for(lambda: bus.stats()["subscriptions"] >= 2, what="listener subscribed")
            r = bus.cli("emit", "post:created", '{"id":7}', "--ack")
            check_eq((r.returncode, json.loads(r.stdout)), (0, {"delivered": 1}), "ack")
            r = bus.cli("emit", "content:a:b", '"hi"', "--to", "broadcast")
            check_eq((r.returncode, r.stdout), (0, ""), "plain emit prints nothing")
            r = bus.cli("emit", "other:x", "1", "--ack")
            check_eq(json.loads(r.stdout), {"delivered": 0}, "no subscriber")
            lines = [json.loads(ls.stdout.readline()) for _ in range(2)]
            check_eq([(l["event"], l["payload"]) for l in lines], [("post:created", {"id": 7}), ("content:a:b", "hi")],
                     "listen output")
        finally:
            ls.send_signal(signal.SIGINT)
            check_eq(ls.wait(10), 0, "listen exits 0 on SIGINT")


@test
def listen_reconnects_after_a_bus_restart():
    with Bus() as bus:
        ls = cli_bg(bus, "listen", "a:>")
        try:
            lbtest.wait_for(lambda: bus.stats()["subscriptions"] >= 1, what="listener subscribed")
            bus.stop()
            bus.start()
            # Backoff starts at 100 ms: the listener is back within seconds.
            lbtest.wait_for(lambda: bus.stats()["subscriptions"] >= 1, timeout=10, what="listener re-subscribed")
            r = bus.cli("emit", "a:b", "1", "--ack")
            check_eq(json.loads(r.stdout), {"delivered": 1}, "delivered to the listener after the restart")
            check_eq(json.loads(ls.stdout.readline())["event"], "a:b", "the listener printed it")
        finally:
            ls.send_signal(signal.SIGINT)
            check_eq(ls.wait(10), 0, "listen exits 0 on SIGINT")


@test
def services_stats_and_exit_codes():
    with Bus() as bus:
        r = bus.cli("services")
        check_eq(r.returncode, 0, "services")
        check(any(s["name"] == "lexbus" for s in json.loads(r.stdout)), "lists the bus")
        r = bus.cli("stats")
        check("messagesIn" in json.loads(r.stdout), "stats")
        check_eq(bus.cli("call").returncode, 2, "usage error")
        check_eq(bus.cli("frobnicate").returncode, 2, "unknown command")
        r = bus.cli("--server", "unix:/nonexistent/sock", "call", "a", "b")
        check_eq(r.returncode, 3, "connection failure")
        check_eq(json.loads(r.stderr)["error"]["code"], "CONNECTION_LOST", "error JSON")
        bus.client("sink", methods=["hold"])
        r = bus.cli("--timeout", "300", "call", "sink", "hold")
        check_eq(r.returncode, 4, "timeout exit code")
        check_eq(json.loads(r.stderr)["error"]["code"], "TIMEOUT", "timeout code")
        for sub in ("call", "emit", "listen", "serve", "services", "stats"):
            r = bus.cli(sub, "--help")
            check(r.returncode == 0 and "usage: lexbus " + sub in r.stdout, "%s --help" % sub)
        r = bus.cli("--help")
        check(r.returncode == 0 and "Exit codes" in r.stdout, "--help")


lbtest.main()
