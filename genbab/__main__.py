"""``python -m genbab``: the same as the ``genbab`` command."""

import sys

from genbab.cli import main

if __name__ == "__main__":
    sys.exit(main())
