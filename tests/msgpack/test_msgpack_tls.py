"""MessagePack over the tls-tcp transport (mutual TLS), with JSON clients on
the unix socket; the transport's encoding key."""
import os
import socket
import sys

import lbtest
from lbtest import check, check_eq, test
from mputil import MpClient, is_map_byte

sys.path.insert(0, os.path.join(lbtest.SRCDIR, "tests", "tls"))
import tlsutil  # noqa: E402

CERTS = tlsutil.certs("order-service", "user-service")


def mp_tls(port, name):
    ctx = tlsutil.client_ctx(CERTS, name)
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    return MpClient(ctx.wrap_socket(raw, server_hostname="localhost"))


@test
def msgpack_over_mutual_tls_talks_to_json_over_unix():
    port = tlsutil.free_port()
    with tlsutil.tls_bus(CERTS, port) as bus:
        order = mp_tls(port, "order-service")
        bus.clients.append(order)
        ack = order.register("order-service", methods=["place"])
        check_eq((ack["type"], ack["auth"]), ("REGISTER_ACK", "mtls"), "registered over TLS, in MessagePack")
        js = bus.client("stock", methods=["reserve"])
        big = {"sku": "x" * 200000, "n": [2**64 - 1, -1, 0.5]}
        order.send({"type": "CALL", "id": "req-1", "from": "order-service", "to": "stock", "method": "reserve",
                    "params": big, "context": {"root": "r", "chain": ["order-service"], "depth": 1,
                                               "deadline": 9999999999999}})
        call = js.recv(timeout=10)
        check_eq(call["params"], big, "200 KB of params across TLS records")
        js.send({"type": "RESPONSE", "id": "req-1", "status": "success", "data": {"ok": True}, "context": call["context"]})
        r = order.recv_type("RESPONSE")
        check_eq((r["data"], is_map_byte(order.last_body[0])), ({"ok": True}, True), "answer in MessagePack")
        js.send({"type": "CALL", "id": "j1", "to": "order-service", "method": "place", "params": [1]})
        call = order.recv()
        order.send({"type": "RESPONSE", "id": call["id"], "status": "success", "data": call["params"]})
        check_eq(js.recv()["data"], [1], "JSON caller, MessagePack callee over TLS")
        order.send({"type": "EMIT", "event": "a", "payload": b"\x00"})
        e = order.recv()
        check_eq(e["error"]["code"], "INVALID_MESSAGE", "refusal in MessagePack over TLS")
        check("bin" in e["error"]["message"], e["error"]["message"])


@test
def tls_encoding_key():
    port = tlsutil.free_port()
    with tlsutil.tls_bus(CERTS, port, extra="encoding = json\n") as bus:
        c = mp_tls(port, "user-service")
        bus.clients.append(c)
        c.send({"type": "REGISTER", "serviceName": "user-service", "methods": []})
        c.__class__ = lbtest.RawClient
        e = c.recv()
        check("a MessagePack frame on a connection that speaks JSON (set by the listener's encoding key)"
              in e["error"]["message"], e["error"]["message"])
        check_eq(c.register("user-service")["type"], "REGISTER_ACK", "JSON is fine")
    with tlsutil.tls_bus(CERTS, port, extra="encoding = msgpack\n") as bus:
        c = mp_tls(port, "user-service")
        bus.clients.append(c)
        check_eq(c.register("user-service")["type"], "REGISTER_ACK", "MessagePack on a msgpack listener")
        check_eq(bus.client("unix-json").name, "unix-json", "the unix listener (auto) still takes JSON")


try:
    lbtest.main()
finally:
    tlsutil.cleanup()
