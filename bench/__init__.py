"""Benchmarks: each module prints its figures and writes JSON to bench/results/."""
