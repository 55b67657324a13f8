#!/usr/bin/env python
"""``liteasr plot-size`` (:mod:`liteasr_hf.cli.plot_size`), run from a checkout: ``python scripts/plot_size.py --help``."""

import sys

from liteasr_hf.cli.plot_size import main

if __name__ == "__main__":
    sys.exit(main())
