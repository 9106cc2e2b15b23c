"""``python -m mydns_lab.analysis``: the servers x clerks grid chart. The
code lives in :mod:`mydns_lab.experiments.analysis`; this name is kept
because the README and docs run it so."""

from __future__ import annotations

import sys

from .experiments.analysis import main

if __name__ == "__main__":
    sys.exit(main())
