"""Helpers of benchmarks/experiment_empo_cpu.py: the synthetic task and the run/eval plumbing."""
