#!/usr/bin/env python
"""``liteasr profile-onnx`` (:mod:`liteasr_hf.cli.profile_onnx`), run from a checkout: ``python scripts/profile_onnx_encoders.py --help``."""

import sys

from liteasr_hf.cli.profile_onnx import main

if __name__ == "__main__":
    sys.exit(main())
