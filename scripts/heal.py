#!/usr/bin/env python
"""``liteasr heal`` (:mod:`liteasr_hf.cli.heal`), run from a checkout: ``python scripts/heal.py --help``."""

import sys

from liteasr_hf.cli.heal import main

if __name__ == "__main__":
    sys.exit(main())
