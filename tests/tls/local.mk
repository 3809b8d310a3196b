# The tls-tcp transport and scripts/gen-certs.sh (certificates made in temp dirs).
TESTS += tls/test_tls.py tls/test_tls_refusals.py tls/test_gencerts.py
EXTRA_DIST += tls/test_tls.py tls/test_tls_refusals.py tls/test_gencerts.py tls/tlsutil.py
