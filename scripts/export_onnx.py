#!/usr/bin/env python
"""``liteasr export-onnx`` (:mod:`liteasr_hf.cli.export_onnx`), run from a checkout: ``python scripts/export_onnx.py --help``."""

import sys

from liteasr_hf.cli.export_onnx import main

if __name__ == "__main__":
    sys.exit(main())
