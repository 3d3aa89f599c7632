"""``python -m partspec``: the ``pspec`` command line."""

import sys

from partspec.tools.cli import main

sys.exit(main())
