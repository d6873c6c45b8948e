"""Adapting a shipped model to the scan at hand, on that scan alone (self-supervised, minutes on a CPU)."""
