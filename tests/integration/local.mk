# Integration tests against the real lexbusd (see tests/integration/*.py).
INTEGRATION_TESTS = \
	integration/test_protocol.py \
	integration/test_errors.py \
	integration/test_badinput.py \
	integration/test_daemon.py \
	integration/test_unix.py \
	integration/test_hardening.py \
	integration/test_build.py
TESTS += $(INTEGRATION_TESTS)
EXTRA_DIST += $(INTEGRATION_TESTS)
