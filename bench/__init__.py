"""Strongroom benchmarks (see run.py)."""
