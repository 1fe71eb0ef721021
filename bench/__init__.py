"""Benchmarks: top-level scripts (each run by tests/e2e/test_bench_smoke.py) and what they share."""
