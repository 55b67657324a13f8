#!/usr/bin/env python
"""Write the shipped LibriSpeech train-clean-100 calibration readers (data/librispeech-calibration) from the
repository that holds them.

    git clone https://github.com/resemble-ai/Resemblyzer /tmp/Resemblyzer
    git -C /tmp/Resemblyzer checkout 15d828edebe06bc72b9cabc8ef8ca5ab2cb457ce
    python scripts/make_librispeech_calibration_set.py \
        --audio /tmp/Resemblyzer/audio_data/librispeech_train-clean-100 --overwrite
"""

from __future__ import annotations

import argparse
import sys

from liteasr_hf.data.librispeech import build_librispeech_calibration_set
from liteasr_hf.data.speech_set import read_metadata
from liteasr_hf.data.suite import LIBRISPEECH_CALIBRATION_SET, LIBRISPEECH_SET


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--audio", required=True, help="folder of <speaker>-<chapter>-<index>.flac utterances")
    p.add_argument("--max-seconds", type=float, default=6.0, help="cut each utterance to its first this many seconds")
    p.add_argument("--output", default=str(LIBRISPEECH_CALIBRATION_SET))
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    args = p.parse_args(argv)
    try:
        evaluation = {r["speaker"] for r in read_metadata(LIBRISPEECH_SET / "evaluation")}
        rows = build_librispeech_calibration_set(args.audio, args.output, max_seconds=args.max_seconds,
                                                 exclude_speakers=evaluation, overwrite=args.overwrite)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    minutes = sum(r["duration"] for r in rows) / 60
    print(f"calibration: {len(rows)} clips, {len({r['speaker'] for r in rows})} speakers, {minutes:.1f} minutes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
