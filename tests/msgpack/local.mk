# MessagePack clients (Bro IPC's default serializer) through the real daemon:
# raw clients packed by Python's msgpack, the real Bro IPC client (node, its
# msgpackr from npm ci), liblexbus and the CLI (--encoding msgpack).
MSGPACK_TESTS = msgpack/test_msgpack.py msgpack/test_msgpack_policy.py msgpack/test_msgpack_tls.py \
	msgpack/test_msgpack_client.py msgpack/test_bro_client.py
TESTS += $(MSGPACK_TESTS)
EXTRA_DIST += $(MSGPACK_TESTS) msgpack/mputil.py msgpack/bro
