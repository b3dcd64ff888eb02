"""``python -m aced``: the ``aced`` command (see `aced.launch` and `aced.cli`)."""

import sys

from aced.launch import main

sys.exit(main())
