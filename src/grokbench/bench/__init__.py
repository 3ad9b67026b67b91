"""Benchmarks: per-family backends (`bench-backends`) and training throughput against the reference setup
(`bench-train`). Performance claims are these scripts' printed ratios, never timed unit tests."""
