#!/usr/bin/env python
"""``liteasr compare-q8`` (:mod:`liteasr_hf.cli.compare_q8`), run from a checkout: ``python scripts/compare_q8.py --help``."""

import sys

from liteasr_hf.cli.compare_q8 import main

if __name__ == "__main__":
    sys.exit(main())
