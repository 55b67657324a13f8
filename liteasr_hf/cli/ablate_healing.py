"""The healing ablation: the paper's recipe, ours, ours healed block-wise, and ours healed block-wise and end to end,
at one encoder size, all evaluated on the same speech in one run (WER on all clips, the synthetic voices and the
real recordings).

    liteasr ablate-healing --model base --budget 0.74 --output results/ablation-base-74
    liteasr ablate-healing --model tiny.en --budget 0.70 --variants ours ours+block+e2e --output ...

Prints the table and writes ablation.json and ablation.md (and the model folders) under --output.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from ..compression.settings import HealSettings
from ..compression.presets import load_settings
from ..data.speech import SpeechSource
from ..evaluation.ablation import VARIANTS, format_ablation, run_healing_ablation


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="liteasr ablate-healing", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="base", help="the dense Whisper: folder, Hub id or packaged checkpoint")
    p.add_argument("--budget", type=float, required=True, help="share of the encoder parameters to keep")
    p.add_argument("--preset", default=None, help="our preset (default: by model size); its `heal:` is used")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--heal-data", default=None, help="healing audio (default: the calibration mix, stopping on the development speakers)")
    p.add_argument("--heal-split", default=None)
    p.add_argument("--data", default=None, help="evaluation speech (default: the shipped evaluation split and the "
                   "evaluation half of the Asterisk prompts, real speech fetched from Debian on first use)")
    p.add_argument("--split", default="evaluation")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--output", required=True)
    p.add_argument("--overwrite", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        heal = (load_settings(args.preset).heal if args.preset else None) or HealSettings()
        healing_audio = (SpeechSource(args.heal_data, split=args.heal_split, text_column=None)
                         if args.heal_data else None)
        report = run_healing_ablation(args.model, args.output, budget=args.budget, preset=args.preset,
                                      variants=tuple(args.variants), heal=heal, healing_audio=healing_audio,
                                      evaluations={"data": SpeechSource(args.data, split=args.split)}
                                      if args.data else None, device=args.device,
                                      batch_size=args.batch_size, overwrite=args.overwrite,
                                      command=shlex.join(["liteasr", "ablate-healing",
                                                          *(sys.argv[1:] if argv is None else argv)]))
    except (ValueError, FileNotFoundError, FileExistsError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_ablation(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
