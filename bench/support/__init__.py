"""What the benchmarks share (a subfolder: tests/e2e/test_bench_smoke.py runs every
top-level `bench/*.py` as a benchmark)."""
