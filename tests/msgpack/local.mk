# MessagePack clients (Bro IPC's default serializer) through the real daemon.
TESTS += msgpack/test_msgpack.py
EXTRA_DIST += msgpack/test_msgpack.py msgpack/mputil.py
