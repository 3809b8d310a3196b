# The websocket transport: /lexbus, Socket.IO (the real socket.io-client
# from npm, installed by the tests with `npm ci` from package-lock.json),
# HTTP endpoints, bad input, and the demo page in headless Chromium.
WEBSOCKET_TESTS = websocket/test_ws_lexbus.py websocket/test_ws_badinput.py websocket/test_socketio.py \
	websocket/test_engineio.py websocket/test_http_api.py websocket/test_demo.py websocket/test_ws_tls.py
TESTS += $(WEBSOCKET_TESTS)
EXTRA_DIST += $(WEBSOCKET_TESTS) websocket/wstest.py websocket/sioctl.js websocket/package.json \
	websocket/package-lock.json
# The plugin's handle tables (slots.c), as a unit.
check_PROGRAMS += websocket/test_slots
TESTS += websocket/test_slots
websocket_test_slots_SOURCES = websocket/test_slots.c ../plugins/websocket/slots.c
websocket_test_slots_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/plugins/websocket
