"""Benchmarks: each module prints measured figures; run `python -m benchmarks.<name>`."""
