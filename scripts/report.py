#!/usr/bin/env python
"""``liteasr report`` (:mod:`liteasr_hf.cli.report`), run from a checkout: ``python scripts/report.py --help``."""

import sys

from liteasr_hf.cli.report import main

if __name__ == "__main__":
    sys.exit(main())
