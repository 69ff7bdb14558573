"""Benchmarks: each module has `measure(...) -> dict` and a `main()` writing JSON + markdown results."""
