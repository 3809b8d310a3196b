# Tests for fuzz: filled in by the work on it.
