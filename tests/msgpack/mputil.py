"""MessagePack clients for the tests: the raw wire protocol with bodies
packed and unpacked by Python's msgpack (Debian's python3-msgpack), an
encoder written independently of the bus's msgpack-c."""
import msgpack

import lbtest
from lbtest import RawClient, TestFailure, check


def is_map_byte(b):
    return 0x80 <= b <= 0x8F or b in (0xDE, 0xDF)


def mp_decode(body):
    """A frame the bus sent: it must be a MessagePack map."""
    if not body or not is_map_byte(body[0]):
        raise TestFailure("the bus sent a frame that is not a MessagePack map: %r" % bytes(body[:80]))
    return msgpack.unpackb(body, raw=False)


def pack(obj):
    return msgpack.packb(obj, use_bin_type=True)


class MpClient(RawClient):
    encode = staticmethod(pack)
    decode = staticmethod(mp_decode)


def mp_raw(bus):
    c = MpClient.unix(bus.sock)
    bus.clients.append(c)
    return c


def mp_client(bus, name, methods=None, subscribe=None, **kw):
    c = mp_raw(bus)
    ack = c.register(name, methods=methods, subscribe=subscribe, **kw)
    check(ack.get("type") == "REGISTER_ACK", "REGISTER %s refused: %r" % (name, ack))
    return c


def answer(callee, call, data=None, **extra):
    """Answers a CALL as a Bro service does (id, from/to swapped, context echoed)."""
    msg = {"type": "RESPONSE", "id": call["id"], "from": call["to"], "to": call["from"], "status": "success",
           "data": call.get("params") if data is None else data, "context": call.get("context")}
    msg.update(extra)
    callee.send(msg)
