# Tests for tls: filled in by the work on it.
