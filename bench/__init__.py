"""Benchmarks: each prints its figures side by side with the baseline it competes with."""
