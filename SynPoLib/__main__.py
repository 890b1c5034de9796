"""``python -m SynPoLib`` is the ``synpo`` command."""

import sys

from .cli import main

sys.exit(main())
