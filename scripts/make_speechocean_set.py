#!/usr/bin/env python
"""Write the shipped selection of speechocean762 (data/speechocean762) from a checkout of the corpus.

    git clone https://github.com/jimbozhang/speechocean762 /tmp/speechocean762
    python scripts/make_speechocean_set.py --corpus /tmp/speechocean762 --overwrite
    python -c "from liteasr_hf.data.suite import write_evaluation_manifest; write_evaluation_manifest()"
"""

from __future__ import annotations

import argparse
import sys

from liteasr_hf.data.suite import SPEECHOCEAN_SET, write_evaluation_manifest
from liteasr_hf.data.speechocean import build_speechocean_set


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", required=True, help="checkout of speechocean762 (folders train, test, WAVE)")
    p.add_argument("--output", default=str(SPEECHOCEAN_SET))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    args = p.parse_args(argv)
    try:
        written = build_speechocean_set(args.corpus, args.output, seed=args.seed, overwrite=args.overwrite)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.output == str(SPEECHOCEAN_SET):
        write_evaluation_manifest()
    for split, rows in written.items():
        print(f"{split}: {len(rows)} clips, {len({r['speaker'] for r in rows})} speakers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
