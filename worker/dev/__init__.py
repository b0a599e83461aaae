"""Tools for developing and trying spdist, not for running it: the fake Streampixel, the
demo, the local stack runner (`spdist up`), and what the tests and the benchmark share to
start processes (procs), inject faults (faults) and read CPU from /proc (cpu).

The core never imports this package; only the command line (`spdist up`, `spdist demo`),
the tests and the benchmark do (import-linter contracts in pyproject.toml).
"""
