"""Diagnostics as data, their renderers, and the one exception partspec raises.

Every problem partspec finds in a spec, or in a spec applied to a parameter tree,
is a :class:`Diagnostic`: a code, a severity, a message, a position and an optional
hint. :class:`SpecError` carries a list of them and renders them the way ruff
does::

    error[E401]: unknown optimizer `adma`
     --> spec.pspec:2:12
      |
    2 | head/** -> adma(1e-3)
      |            ^^^^ not an allow-listed optax function
      |
      = help: did you mean `adam`?

>>> import partspec
>>> try:
...     partspec.parse("head/** -> adma(1e-3)", filename="spec.pspec")
... except partspec.SpecError as err:
...     print(err.diagnostics[0].code, err.diagnostics[0].line, err.diagnostics[0].column)
E401 1 12
"""

from partspec.diagnostics.errors import SpecError, SpecWarning
from partspec.diagnostics.model import Annotation, Diagnostic, Severity, Span
from partspec.diagnostics.render import full_all as render
from partspec.diagnostics.suggest import closest, did_you_mean
from partspec.diagnostics.text import MAX_SOURCE_WIDTH, MAX_TEXT, clip, printable, source_lines

__all__ = [
    "MAX_SOURCE_WIDTH",
    "MAX_TEXT",
    "Annotation",
    "Diagnostic",
    "Severity",
    "Span",
    "SpecError",
    "SpecWarning",
    "clip",
    "closest",
    "did_you_mean",
    "printable",
    "render",
    "source_lines",
]
