"""lexbusd as an operator runs it: config errors, -t, -d, Bro compatibility, back-pressure."""
import json
import os
import signal
import socket
import subprocess
import tempfile
import time

import lbtest
from lbtest import LEXBUSD, Bus, RawClient, check, check_eq, test


def run_daemon(conf_text, *args, timeout=20):
    d = tempfile.mkdtemp(prefix="lexbus-conf-")
    path = os.path.join(d, "bus.conf")
    with open(path, "w") as f:
        f.write(conf_text.replace("@DIR@", d))
    p = subprocess.run([LEXBUSD, "-c", path] + list(args), capture_output=True, text=True, timeout=timeout)
    return p, path, d


GOOD = "[bus]\nnode = n1\n[plugin unix]\npath = @DIR@/bus.sock\n"


@test
def check_mode_accepts_a_good_file():
    p, path, d = run_daemon(GOOD, "-t")
    check_eq(p.returncode, 0, "exit: " + p.stderr)
    check("configuration OK" in p.stdout, p.stdout)
    check(not os.path.exists(os.path.join(d, "bus.sock")), "-t opens nothing")


@test
def bad_configs_stop_start_up_with_file_line_and_cause():
    cases = [
        ("[bus]\nnode = n1\n[nonsense]\n", ":3: unknown section [nonsense]"),
        ("[bus]\nnode = n1\nbogus_key = 1\n", ":3: [bus] unknown key 'bogus_key'"),
        ("[bus]\ncall_timeout = soon\n", ":2: [bus] bad value 'soon' for 'call_timeout'"),
        ("[bus]\nmax_frame = 10Q\n", ":2: [bus] bad value '10Q' for 'max_frame'"),
        ("[bus]\nmode = chaos\n", ":2: [bus] bad value 'chaos' for 'mode'"),
        ("[bus]\n[plugin unix]\npath = @DIR@/s.sock\npth = x\n", ":4: [plugin unix] unknown key 'pth'"),
        ("[bus]\n[plugin unix]\nmode = 999\n", "mode '999' is not an octal file mode"),
        ("[bus]\n[plugin nosuch]\n", ":2: [plugin nosuch] no nosuch.so in plugin_dir"),
        ("[bus]\nnode = a\nnode = b\n", "given more than once"),
        ("key = value\n", ":1: key 'key' outside any section"),
        ("[bus\n", ":1: malformed section header"),
    ]
    for text, want in cases:
        for args in ((), ("-t",)):
            p, path, d = run_daemon(text, *args)
            check_eq(p.returncode, 1, "exit for %r %s: %s" % (text, args, p.stderr))
            check(path in p.stderr and want in p.stderr, "want %r in stderr for %r, got %r" % (want, text, p.stderr))


@test
def empty_nul_filled_and_binary_configs_are_refused():
    """-t and a start refuse a bus.conf that is not text or configures nothing;
    a SIGHUP on one keeps the running configuration (its limits too)."""
    cases = [
        (b"", ": no [bus] or [plugin NAME] section (the file is empty or holds only comments)"),
        (b"# nothing but a comment\n\n", ": no [bus] or [plugin NAME] section"),
        (b"\0" * 4096, ":1: NUL byte at column 1"),
        (b"[bus]\nnode = n1\n" + b"\0" * 64, ":3: NUL byte"),
        (b"[bus]\nnode = n\xff1\n", ":2: invalid UTF-8 (byte 0xff at column 9)"),
        (b"\x7fELF\x02\x01\x01\0\0", ":1: control character 0x7f at column 1"),
        (b"[bus]\nnode = a\x1b[31mred\n", ":2: control character 0x1b at column 9"),
    ]
    for data, want in cases:
        d = tempfile.mkdtemp(prefix="lexbus-conf-")
        path = os.path.join(d, "bus.conf")
        with open(path, "wb") as f:
            f.write(data)
        for args in (("-t",), ()):
            p = subprocess.run([LEXBUSD, "-c", path] + list(args), capture_output=True, text=True, timeout=20)
            check_eq(p.returncode, 1, "exit for %r %s: %s" % (data[:20], args, p.stderr))
            check(path + want in p.stderr, "want %r in stderr for %r, got %r" % (path + want, data[:20], p.stderr))
            check("configuration OK" not in p.stdout, p.stdout)
    with Bus(bus="max_frame = 4K\n") as bus:
        c = bus.client("svc")
        for data in (b"", b"\0" * 100):
            with open(bus.conf, "wb") as f:
                f.write(data)
            mark = len(bus.logtext())
            bus.send_signal(signal.SIGHUP)
            lbtest.wait_for(lambda: "reload failed, old configuration kept" in bus.logtext()[mark:], what="reload refused")
        big = json.dumps({"type": "EMIT", "event": "a", "payload": "x" * 5000}).encode()
        c.send_raw(len(big).to_bytes(4, "big") + big)
        check_eq(c.expect_closed()[0]["error"]["code"], "PAYLOAD_TOO_LARGE", "max_frame = 4K still applies")
        check_eq(bus.client("svc2").call("lexbus", "ping")["status"], "success", "still serving")


@test
def plugin_abi_mismatch_is_detected():
    d = tempfile.mkdtemp(prefix="lexbus-abi-")
    src = os.path.join(d, "old.c")
    with open(src, "w") as f:
        f.write('struct lb_plugin { int abi; const char *name; const char *version; void *load, *unload, *reload; };\n'
                'const struct lb_plugin lexbus_plugin = { 9999, "old", "0", 0, 0, 0 };\n')
    subprocess.run(["cc", "-shared", "-fPIC", "-o", os.path.join(d, "old.so"), src], check=True)
    with open(os.path.join(d, "notaplugin.c"), "w") as f:
        f.write("int nothing_here;\n")
    subprocess.run(["cc", "-shared", "-fPIC", "-o", os.path.join(d, "notaplugin.so"),
                    os.path.join(d, "notaplugin.c")], check=True)
    p, path, _ = run_daemon("[bus]\nplugin_dir = %s\n[plugin old]\n" % d)
    check_eq(p.returncode, 1, "exit")
    check("plugin ABI mismatch: plugin has ABI 9999" in p.stderr and path + ":3" in p.stderr, p.stderr)
    # A plugin built for ABI 1 (lexbus 0.1) is refused, pointing at what changed.
    with open(os.path.join(d, "v1.c"), "w") as f:
        f.write('struct lb_plugin { int abi; const char *name; const char *version; void *load, *unload, *reload; };\n'
                'const struct lb_plugin lexbus_plugin = { 1, "v1", "0", 0, 0, 0 };\n')
    subprocess.run(["cc", "-shared", "-fPIC", "-o", os.path.join(d, "v1.so"), os.path.join(d, "v1.c")], check=True)
    p, path, _ = run_daemon("[bus]\nplugin_dir = %s\n[plugin v1]\n" % d)
    check_eq(p.returncode, 1, "exit")
    check("plugin has ABI 1, lexbusd needs 2" in p.stderr and "doc/plugins.md" in p.stderr, p.stderr)
    p, path, _ = run_daemon("[bus]\nplugin_dir = %s\n[plugin notaplugin]\n" % d)
    check_eq(p.returncode, 1, "exit")
    check("not a lexbus plugin" in p.stderr, p.stderr)


@test
def daemonize_writes_pid_file_and_sigterm_removes_it():
    d = tempfile.mkdtemp(prefix="lexbus-d-")
    conf = os.path.join(d, "bus.conf")
    pidf = os.path.join(d, "lexbusd.pid")
    with open(conf, "w") as f:
        # With audit: its writer thread must survive the fork into the background.
        f.write("[bus]\nlog_file = %s/lexbusd.log\n[plugin unix]\npath = %s/bus.sock\n"
                "[plugin audit]\nfile = %s/audit.jsonl\nchain = yes\n" % (d, d, d))
    p = subprocess.run([LEXBUSD, "-c", conf, "-d", "-p", pidf], capture_output=True, text=True, timeout=20)
    check_eq(p.returncode, 0, "parent exits 0: " + p.stderr)
    check(os.path.exists(pidf), "the pid file exists when `lexbusd -d` returns")
    lbtest.wait_for(lambda: os.path.exists(os.path.join(d, "bus.sock")), what="socket")
    pid = int(open(pidf).read())
    c = RawClient.unix(os.path.join(d, "bus.sock"))
    check_eq(c.register("svc")["type"], "REGISTER_ACK", "daemon serves")
    c.close()
    os.kill(pid, signal.SIGTERM)
    lbtest.wait_for(lambda: not os.path.exists(pidf), what="pid file removed")
    check("stopped" in open(os.path.join(d, "lexbusd.log")).read(), "logged to log_file")
    audit = open(os.path.join(d, "audit.jsonl")).read().splitlines()
    check(any(json.loads(l).get("type") == "REGISTER" and json.loads(l).get("name") == "svc" for l in audit),
          "the daemonized bus wrote its audit lines: %r" % audit)
    check(not any(json.loads(l).get("type") == "DROPPED" for l in audit), "nothing dropped")
    # A daemon that cannot finish starting in the background says so in its exit status.
    bad = subprocess.run([LEXBUSD, "-c", conf, "-d", "-p", os.path.join(d, "no-such-dir", "x.pid")],
                         capture_output=True, text=True, timeout=20)
    check_eq(bad.returncode, 1, "an unwritable pid file fails `lexbusd -d`")
    check("cannot write pid file" in open(os.path.join(d, "lexbusd.log")).read(), "and is logged")


@test
def refuses_to_steal_a_live_socket():
    with Bus() as bus:
        p = subprocess.run([LEXBUSD, "-c", bus.conf], capture_output=True, text=True, timeout=20)
        check_eq(p.returncode, 1, "second daemon refused")
        check("in use by another running lexbusd" in p.stderr, p.stderr)
        check_eq(bus.client("still").call("lexbus", "ping")["status"], "success", "first still serves")


@test
def bro_ipc_frames_work_unchanged():
    """The exact bytes of a Bro IPC (JSON serializer) session."""
    with Bus() as bus:
        user = RawClient.unix(bus.sock)
        user.send_raw(bytes.fromhex("0000006a") + b'{"type":"REGISTER","serviceName":"user-service","methods":["getUserById"],"version":"1.0.0","metadata":{}}')
        check_eq(user.recv()["type"], "REGISTER_ACK", "ack")
        order = RawClient.unix(bus.sock)
        order.send_raw(lbtest.frame(b'{"type":"REGISTER","serviceName":"order-service","methods":[],"version":"1.0.0","metadata":{}}'))
        order.recv()
        deadline = int(time.time() * 1000) + 30000
        call = ('{"type":"CALL","id":"req-1699005123456-a7f3e9","from":"order-service","to":"user-service",'
                '"method":"getUserById","params":{"userId":"123"},"context":{"root":"root-1699005123456-k2j9xq",'
                '"chain":["order-service","order-service"],"depth":2,"deadline":%d}}' % deadline).encode()
        order.send_raw(lbtest.frame(call))
        got = user.sock.recv(4 + len(call))
        while len(got) < 4 + len(call):
            got += user.sock.recv(4 + len(call) - len(got))
        check_eq(got, lbtest.frame(call), "CALL forwarded byte for byte")
        resp = ('{"type":"RESPONSE","id":"req-1699005123456-a7f3e9","from":"user-service","to":"order-service",'
                '"status":"success","data":{"id":"123","name":"ada"},"context":{"root":"root-1699005123456-k2j9xq",'
                '"chain":["order-service","order-service"],"depth":2,"deadline":%d}}' % deadline).encode()
        user.send_raw(lbtest.frame(resp))
        check_eq(order.recv(), __import__("json").loads(resp), "RESPONSE forwarded unchanged")
        user.send_raw(bytes.fromhex("00000044") + b'{"type":"HEARTBEAT","from":"user-service","timestamp":1699005150000}')
        user.expect_nothing()
        order.send_raw(lbtest.frame(b'{"type":"CALL","id":"req-2","from":"order-service","to":"pay","method":"x","params":{},"context":{"root":"r","chain":["order-service"],"depth":1,"deadline":%d}}' % deadline))
        r = order.recv()
        check_eq((r["type"], r["id"], r["status"], r["error"]["code"]), ("RESPONSE", "req-2", "error", "SERVICE_NOT_FOUND"),
                 "Bro error code in a RESPONSE the client settles on")


@test
def slow_consumer_pauses_publisher_then_is_closed():
    # Point-to-point (an EMIT to the service): the sender waits for the
    # recipient; broadcasts never pause a publisher (test_hardening.py).
    with Bus(bus="outbuf_high = 64K\nslow_consumer_timeout = 1s\n") as bus:
        sink = bus.client("sink", subscribe=["flood"])
        sink.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        pub = bus.client("pub")
        other = bus.client("other", subscribe=["other"])
        payload = "x" * 1000
        body = lbtest.frame({"type": "EMIT", "event": "flood", "to": "sink", "payload": payload})
        pub.sock.setblocking(False)
        pending = b""
        t = time.time()
        while time.time() - t < 8:
            if not pending:
                pending = body * 64
            try:
                pending = pending[pub.sock.send(pending):]   # whole frames only, in order
            except BlockingIOError:
                time.sleep(0.05)
            if "SLOW_CONSUMER" in bus.logtext() or "slow consumer" in bus.logtext():
                break
        check("slow consumer" in bus.logtext(), "sink closed as slow consumer")
        st = bus.stats()
        check(st["senderPauses"] >= 1, "publisher was paused: %r" % st["senderPauses"])
        check(st["slowConsumers"] >= 1, "counted")
        pub.sock.setblocking(True)
        if pending:
            pub.sock.sendall(pending)
        # The publisher continues once the sink is gone.
        pub.send({"type": "EMIT", "event": "other", "payload": 1, "ack": True, "id": "after"})
        check_eq(pub.recv_type("ACK", timeout=10)["delivered"], 1, "publisher still served")
        check_eq(other.recv_type("EVENT")["event"], "other", "other subscriber still served")


lbtest.main()
