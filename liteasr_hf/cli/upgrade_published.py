"""Upgrade a published lite-whisper model (efficient-speech/lite-whisper-* layout) to a complete LiteWhisper folder.

    liteasr upgrade-published --model efficient-speech/lite-whisper-large-v3 --output models/lite-large-v3
    liteasr upgrade-published --model DIR --output OUT --processor models/whisper-tiny.en

The output has the same weights, bit for bit, with this project's code files (remote code, pipeline), the
tokenizer and feature extractor (by default from openai/whisper-<size>, which the published repos' cards name),
and generation_config.json. The published repo's own code is never run.
"""

from __future__ import annotations

import argparse
import sys

from ..checkpoints.published import upgrade_published


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="liteasr upgrade-published", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="published-layout folder or Hub id")
    p.add_argument("--output", required=True, help="folder to write")
    p.add_argument("--processor", default=None,
                   help="folder or Hub id with the tokenizer and feature extractor (default: the model's own, "
                        "else openai/whisper-<size>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        folder = upgrade_published(args.model, args.output, processor=args.processor, overwrite=args.overwrite)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"Wrote {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
