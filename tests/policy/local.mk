# Tests for policy: filled in by the work on it.
