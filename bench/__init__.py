"""Scoring-speed benchmark: reference models on generated Criteo-shaped data, engines side by side.

``python -m bench`` (or ``make bench``) trains the reference models once,
compiles them with every engine once, and measures in-memory scoring speed;
the results go to ``bench/results.json`` and are written up in BENCHMARKS.md.
"""
