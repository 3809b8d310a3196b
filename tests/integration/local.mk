# Integration tests against the real lexbusd (see tests/integration/*.py).
