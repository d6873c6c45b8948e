"""Networks, the self-describing model files that hold them, and the registry of shipped models."""
