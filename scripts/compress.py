#!/usr/bin/env python
"""``liteasr compress`` (:mod:`liteasr_hf.cli.compress`), run from a checkout: ``python scripts/compress.py --help``."""

import sys

from liteasr_hf.cli.compress import main

if __name__ == "__main__":
    sys.exit(main())
