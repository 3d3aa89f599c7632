"""Matching: glob patterns compiled and run over parameter paths. Pure Python.

- :mod:`~partspec.matching.globs`: every rule's patterns compiled into one NFA over
  the characters of a path, simulated as a lazily built DFA (linear, no
  backtracking, braces and ranges never multiplied out);
- :mod:`~partspec.matching.captures`: what each ``<name>`` binds (a Pike VM).
"""
