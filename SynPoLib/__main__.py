"""``python -m SynPoLib`` is the ``synpo`` command."""

import sys

try:
    from .cli import console
except KeyboardInterrupt:  # Ctrl-C while Python was still importing the command
    print("synpo: cancelled (Ctrl-C); nothing was written", file=sys.stderr)
    sys.exit(130)

console()
