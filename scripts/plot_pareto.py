#!/usr/bin/env python
"""``liteasr plot-pareto`` (:mod:`liteasr_hf.cli.plot_pareto`), run from a checkout: ``python scripts/plot_pareto.py --help``."""

import sys

from liteasr_hf.cli.plot_pareto import main

if __name__ == "__main__":
    sys.exit(main())
