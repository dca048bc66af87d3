"""The files zoo writes and reads: crash-safe writes, safe YAML, the run-folder layout, plots.

The lowest layer: it imports nothing of zoo but :mod:`zoo.errors`.
"""
