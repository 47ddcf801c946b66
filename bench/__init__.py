"""Benchmarks: speed, memory and quality measurements whose results are recorded in BENCHMARKS.md."""
