"""``python -m nea.loadtest``: the same as the ``nea-loadtest`` command."""

import sys

from nea.loadtest.cli import main

sys.exit(main())
