"""Plot WER against encoder parameters for named series of models: the paper's recipe, ours, healed, at each size.

    liteasr plot-size --series Whisper results/whisper-tiny.en.summary.json results/whisper-base.summary.json \
        --series "ours, healed" results/base.summary.json results/base-fast.summary.json \
        --speech real --output results/wer-size.png

Every summary must come from the same evaluation (liteasr evaluate on the same data). Parameters are counted without
the position table, as the published lite-whisper tables count them.
"""

from __future__ import annotations

import argparse
import sys

from ..evaluation.pareto import plot_wer_against_size, size_points


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="liteasr plot-size", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--series", nargs="+", action="append", required=True, metavar=("NAME", "SUMMARY"),
                   help="a series' name, then its *.summary.json files (written by liteasr evaluate); repeat per series")
    p.add_argument("--speech", choices=("all", "real"), default="real",
                   help="WER of the real speakers' groups pooled (real, the default) or of every group (all)")
    p.add_argument("--title", default=None)
    p.add_argument("--output", default="results/wer-size.png")
    args = p.parse_args(argv)
    short = [s[0] for s in args.series if len(s) < 2]
    if short:
        p.error(f"--series {short[0]!r} names no summary: write --series NAME SUMMARY [SUMMARY ...]")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    series: dict[str, list[str]] = {}
    for name, *files in args.series:
        series.setdefault(name, []).extend(files)
    try:
        points = size_points(series, args.speech)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    plot_wer_against_size(points, args.output, args.speech, args.title)
    for p in sorted(points, key=lambda p: p.encoder_params):
        print(f"{p.series:20s} {p.label:32s} {p.encoder_params / 1e6:6.2f}M  WER {p.wer:6.2f}")
    print(f"Wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
