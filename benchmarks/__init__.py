"""Benchmarks of the installed vlmguard, run from a checkout: ``python -m benchmarks.latency``,
``python -m benchmarks.text_gate``, ``python -m benchmarks.preprocess`` (or the files
themselves: each runs itself again as its module)."""
