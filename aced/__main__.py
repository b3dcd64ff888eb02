"""``python -m aced``: the ``aced`` command (see `aced.cli`)."""

import sys

from aced.cli import main

sys.exit(main())
