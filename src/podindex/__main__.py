"""``python -m podindex`` is the ``podindex`` command."""

import sys

from podindex.cli import main

sys.exit(main())
