"""Benchmarks: `python -m bench.run [--quick]` (or `bin/dev bench`) measures the send
path and pagination against the real server and rewrites docs/benchmarks.md."""
