"""Resolution: a checked spec over a parameter structure, leaf by leaf. Pure Python.

- :mod:`~partspec.resolution.resolver`: which rule owns each leaf, and its label;
- :mod:`~partspec.resolution.coverage`: uncovered leaves, unused and shadowed rules;
- :mod:`~partspec.resolution.result`: the :class:`Resolution`, plain data that every
  backend and tool reads.
"""

from partspec.resolution.result import LabelAction, Resolution, resolve_paths

__all__ = ["LabelAction", "Resolution", "resolve_paths"]
