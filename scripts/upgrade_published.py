#!/usr/bin/env python
"""``liteasr upgrade-published`` (:mod:`liteasr_hf.cli.upgrade_published`), run from a checkout: ``python scripts/upgrade_published.py --help``."""

import sys

from liteasr_hf.cli.upgrade_published import main

if __name__ == "__main__":
    sys.exit(main())
