# Tests for client: filled in by the work on it.
