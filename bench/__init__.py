"""Benchmarks that print tables (``python -m semcodec.bench --help``). Never run as tests."""
