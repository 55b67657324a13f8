#!/usr/bin/env python
"""``liteasr ablate-calibration`` (:mod:`liteasr_hf.cli.ablate_calibration`), run from a checkout: ``python scripts/ablate_calibration.py --help``."""

import sys

from liteasr_hf.cli.ablate_calibration import main

if __name__ == "__main__":
    sys.exit(main())
