"""``python -m graphspec.cli``: the command line (used by the distributed launcher)."""
import sys

from . import main

sys.exit(main())
