#!/usr/bin/env python
"""``liteasr benchmark-vllm`` (:mod:`liteasr_hf.cli.benchmark_vllm`), run from a checkout: ``python scripts/benchmark_vllm.py --help``."""

import sys

from liteasr_hf.cli.benchmark_vllm import main

if __name__ == "__main__":
    sys.exit(main())
