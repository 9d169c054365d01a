"""Engines: ``reference`` (idiomatic SimPy, the oracle), ``fast.py`` (the ``loop`` engine:
per-device recursions) and ``numpy.py`` (the same recursions vectorised across devices)."""
