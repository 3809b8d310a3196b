# Tests of the policy plugins (dev-bypass, tokens, ratelimit, audit).
TESTS += policy/test_devbypass.py
EXTRA_DIST += policy/test_devbypass.py
TESTS += policy/test_ratelimit.py
EXTRA_DIST += policy/test_ratelimit.py
TESTS += policy/test_audit.py
EXTRA_DIST += policy/test_audit.py
TESTS += policy/test_tokens.py
EXTRA_DIST += policy/test_tokens.py
TESTS += policy/test_state.py
EXTRA_DIST += policy/test_state.py policy/tokenutil.py
