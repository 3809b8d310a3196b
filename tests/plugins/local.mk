# Tests of plugins/example (the plugin ABI's worked example).
TESTS += plugins/test_example.py
EXTRA_DIST += plugins/test_example.py
