"""``python -m relu_regions``: the ``relu-regions`` command."""

import sys

from .cli import main

sys.exit(main())
