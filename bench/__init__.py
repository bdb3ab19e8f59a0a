"""Benchmarks: cold start, latency, memory and size vs the reference stack (``python -m bench``)."""
