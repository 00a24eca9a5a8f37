"""``python -m relu_regions.cli``: the ``relu-regions`` command."""

import sys

from . import main

sys.exit(main())
