#!/usr/bin/env python
"""``liteasr convert-ctranslate2`` (:mod:`liteasr_hf.cli.convert_ctranslate2`), run from a checkout: ``python scripts/convert_ctranslate2.py --help``."""

import sys

from liteasr_hf.cli.convert_ctranslate2 import main

if __name__ == "__main__":
    sys.exit(main())
