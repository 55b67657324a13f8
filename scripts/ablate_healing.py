#!/usr/bin/env python
"""``liteasr ablate-healing`` (:mod:`liteasr_hf.cli.ablate_healing`), run from a checkout: ``python scripts/ablate_healing.py --help``."""

import sys

from liteasr_hf.cli.ablate_healing import main

if __name__ == "__main__":
    sys.exit(main())
