"""The version of partspec (one place: the package, the CLI and the build read it)."""

__version__ = "0.3.0"
