#!/usr/bin/env python
"""``liteasr benchmark`` (:mod:`liteasr_hf.cli.benchmark`), run from a checkout: ``python scripts/benchmark.py --help``."""

import sys

from liteasr_hf.cli.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
