"""Plot WER against encoder parameters and against measured encoder latency, with the Pareto front.

    liteasr plot-pareto --summaries results/*.summary.json --benchmark results/benchmark-all-cpu.json \
        --output results/pareto.png

Every summary needs a benchmark row for the same model, and every benchmarked model a summary.
"""

from __future__ import annotations

import argparse
import sys

from ..evaluation.pareto import plot_from_files


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="liteasr plot-pareto", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--summaries", nargs="+", required=True, help="*.summary.json written by liteasr evaluate")
    p.add_argument("--benchmark", required=True, help="JSON report written by liteasr benchmark")
    p.add_argument("--batch-size", type=int, default=None, help="latency at this batch size (default: the smallest)")
    p.add_argument("--speech", choices=("all", "real"), default="all",
                   help="WER of every evaluation group (all) or of the real speakers' groups pooled (real)")
    p.add_argument("--output", default="results/pareto.png")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        _, points = plot_from_files(args.summaries, args.benchmark, args.output, args.batch_size, args.speech)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for p in sorted(points, key=lambda p: p.encoder_params):
        print(f"{p.label:32s} {p.encoder_params / 1e6:6.2f}M  WER {p.wer:6.2f}  {p.latency_ms:8.1f} ms")
    print(f"Wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
