#!/usr/bin/env python
"""``liteasr evaluate`` (:mod:`liteasr_hf.cli.evaluate`), run from a checkout: ``python scripts/evaluate.py --help``."""

import sys

from liteasr_hf.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
