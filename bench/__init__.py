"""Benchmarks of spdist against bare baselines: `make bench` or `python -m bench.run`."""
