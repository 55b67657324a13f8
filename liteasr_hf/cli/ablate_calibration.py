"""The calibration ablation: one encoder size, calibrated on each ingredient of the default audio in turn (synthetic
voices, real speakers, real speakers with augmented copies, the whole mix), unhealed, every model evaluated on the
same speech in one run with WER per speaker group (default: the development speakers, whom no calibration hears).

    liteasr ablate-calibration --model base --budget 0.80 --output results/calibration-base-80

Prints the table and writes ablation.json and ablation.md (and the model folders) under --output.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from ..data.speech import SpeechSource
from ..evaluation.ablation import format_ablation
from ..evaluation.calibration_ablation import INGREDIENTS, run_calibration_ablation, variant_slug


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="liteasr ablate-calibration", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="base", help="the dense Whisper: folder, Hub id or packaged checkpoint")
    p.add_argument("--budget", type=float, required=True, help="share of the encoder parameters to keep")
    p.add_argument("--preset", default=None, help="our preset (default: by model size)")
    slugs = {variant_slug(name): name for name in INGREDIENTS}
    p.add_argument("--variants", nargs="+", choices=list(slugs), default=list(slugs),
                   help="what to calibrate on: %(choices)s (default: all)")
    p.add_argument("--data", default=None, help="evaluation speech (default: the development speakers)")
    p.add_argument("--split", default=None)
    p.add_argument("--max-new-tokens", type=int, default=None, help="cap on generated tokens (runaway outputs)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--output", required=True)
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    try:
        report = run_calibration_ablation(
            args.model, args.output, budget=args.budget, preset=args.preset,
            variants=tuple(slugs[v] for v in args.variants),
            evaluations={"data": SpeechSource(args.data, split=args.split)} if args.data else None,
            device=args.device, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
            overwrite=args.overwrite,
            command=shlex.join(["liteasr", "ablate-calibration", *(sys.argv[1:] if argv is None else argv)]))
    except (ValueError, FileNotFoundError, FileExistsError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_ablation(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
