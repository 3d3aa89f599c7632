"""The one exception partspec raises for bad specs, and its warning category."""

from __future__ import annotations

from collections.abc import Sequence

from partspec.diagnostics.model import Diagnostic
from partspec.diagnostics.render import full_all

__all__ = ["SpecError", "SpecWarning"]


class SpecError(ValueError):
    """A spec that cannot be parsed, checked or compiled.

    ``str(err)`` renders every diagnostic with its location, source line and caret;
    ``err.diagnostics`` gives them as data.
    """

    def __init__(self, diagnostics: Sequence[Diagnostic]):
        self.diagnostics: list[Diagnostic] = list(diagnostics)
        super().__init__(full_all(self.diagnostics))

    def __reduce__(self) -> tuple[type, tuple[list[Diagnostic]]]:
        return (type(self), (self.diagnostics,))


class SpecWarning(UserWarning):
    """A rule that matches nothing or is shadowed, or a deprecated optax function."""
