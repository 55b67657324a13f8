#!/usr/bin/env python
"""``liteasr upload`` (:mod:`liteasr_hf.cli.upload`), run from a checkout: ``python scripts/upload.py --help``."""

import sys

from liteasr_hf.cli.upload import main

if __name__ == "__main__":
    sys.exit(main())
