"""The ``pspec`` command line (``python -m partspec``).

Exit codes: 0 clean, 1 problems in a spec, 2 usage errors or unreadable input.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from partspec import __version__

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pspec",
        description="Declarative per-parameter optimizers for JAX: check and explain .pspec files.",
    )
    p.add_argument("--version", action="version", version=f"pspec {__version__}")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = _parser()
    try:
        parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 for --help/--version
        return int(exc.code or 0)
    parser.print_usage(sys.stderr)
    print("pspec: error: no command given (commands arrive in the next release)", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
