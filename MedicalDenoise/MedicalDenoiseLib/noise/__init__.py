"""Noise models: what the networks learn to remove and what the benchmarks add to clean images."""
