# C unit tests of single core modules (see tests/unit/*.c).
