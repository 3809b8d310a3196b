# The tls-tcp transport with certificates from scripts/gen-certs.sh.
TESTS += tls/test_tls.py
EXTRA_DIST += tls/test_tls.py
