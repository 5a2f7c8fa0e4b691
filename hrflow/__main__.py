"""``python -m hrflow`` runs the command line (see :mod:`hrflow.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
