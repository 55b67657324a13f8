#!/usr/bin/env python
"""Write the shipped LibriSpeech test-other sample (data/librispeech) from the two repositories that hold it.

    git clone https://github.com/resemble-ai/Resemblyzer /tmp/Resemblyzer
    git -C /tmp/Resemblyzer checkout 15d828edebe06bc72b9cabc8ef8ca5ab2cb457ce
    git clone https://github.com/facebookresearch/fbai-speech /tmp/fbai-speech
    git -C /tmp/fbai-speech checkout 43cdb3ca9644a755d5c6cc55cbcc91132f85ed44
    python scripts/make_librispeech_set.py --audio /tmp/Resemblyzer/audio_data/librispeech_test-other \
        --transcripts /tmp/fbai-speech/is21_deep_bias/ref/test-other.biasing_100.tsv --overwrite
"""

from __future__ import annotations

import argparse
import sys

from liteasr_hf.data.librispeech import build_librispeech_set
from liteasr_hf.data.suite import LIBRISPEECH_SET


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--audio", required=True, help="folder of LibriSpeech speaker folders holding <id>.flac clips")
    p.add_argument("--transcripts", required=True,
                   help="the split's references: a *.trans.txt (ID TEXT) or a tab-separated ID<TAB>text file")
    p.add_argument("--output", default=str(LIBRISPEECH_SET))
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    args = p.parse_args(argv)
    try:
        rows = build_librispeech_set(args.audio, args.transcripts, args.output, overwrite=args.overwrite)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"evaluation: {len(rows)} clips, {len({r['speaker'] for r in rows})} speakers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
