"""``python -m partspec``: the ``pspec`` command line."""

import sys

from partspec.cli import main

sys.exit(main())
