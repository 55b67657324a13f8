"""Which q8 scheme keeps each model's fp32 accuracy, and how fast their encoders run
(:mod:`liteasr_hf.integrations.onnx.q8_comparison`):

    liteasr compare-q8 --models tiny.en exp/lite-tiny --output exp/q8 --max-per-group 40 \\
        --report docs/results/q8-tiny-cpu.json
"""

from __future__ import annotations

import argparse
import shlex
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from liteasr_hf.integrations.onnx.quantization import Q8_SCHEMES

    p = argparse.ArgumentParser(prog="liteasr compare-q8", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", required=True, help="Whisper or LiteWhisper folders or packaged checkpoints")
    p.add_argument("--output", required=True, help="folder for the exports (one per model and scheme; kept)")
    p.add_argument("--schemes", nargs="+", choices=list(Q8_SCHEMES), default=list(Q8_SCHEMES))
    p.add_argument("--data", default=None, help="speech with text (default: the shipped evaluation split)")
    p.add_argument("--max-per-group", type=int, default=None, help="the first N utterances of each speaker group")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--calibration-windows", type=int, default=16)
    p.add_argument("--report", default=None, help="JSON report to write")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from liteasr_hf.evaluation.reporting import run_provenance
    from liteasr_hf.integrations.onnx.q8_comparison import compare_q8_schemes, format_q8_comparison
    from liteasr_hf.integrations.onnx.quantization import Q8_SCHEMES

    args = parse_args(argv)
    report = compare_q8_schemes(
        args.models, args.output, schemes=[Q8_SCHEMES[s] for s in args.schemes], data=args.data,
        max_per_group=args.max_per_group, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
        threads=args.threads, calibration_windows=args.calibration_windows, report=None)
    report.update(run_provenance("liteasr compare-q8 " + shlex.join(sys.argv[1:] if argv is None else argv)))
    print(format_q8_comparison(report))
    if args.report:
        from liteasr_hf.evaluation.benchmark import write_report

        write_report(args.report, report)
    return 0

