"""Benchmarks: `mailsync bench` and its variants (not imported by the product)."""
