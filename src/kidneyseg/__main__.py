"""``python -m kidneyseg COMMAND ...``: the command line (``torchrun -m kidneyseg train ...`` runs it per process)."""

import sys

from kidneyseg.cli import main

if __name__ == "__main__":
    sys.exit(main())
