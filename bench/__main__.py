"""``python -m bench``: the benchmark against peer buses (``scripts/bench`` runs it)."""

import sys

from bench.cli import main

sys.exit(main(sys.argv[1:]))
