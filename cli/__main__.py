"""``python -m cli``: the ``speech`` command."""

import sys

from cli import main

sys.exit(main())
