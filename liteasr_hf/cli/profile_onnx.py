"""Where exported encoders spend their time, per operator kind and per part of the encoder, in ONNX Runtime's
profiler (:func:`liteasr_hf.integrations.onnx.profiling.profile_encoders`):

    liteasr profile-onnx --models exp/whisper-tiny.en:q8 exp/lite-tiny:q8 --threads 2 \\
        --report docs/results/q8-tiny-profile.json
"""

from __future__ import annotations

import argparse
import shlex
import sys


def main(argv: list[str] | None = None) -> int:
    from liteasr_hf.evaluation.reporting import run_provenance
    from liteasr_hf.integrations.onnx.profiling import format_part_profiles, format_profiles, profile_encoders

    p = argparse.ArgumentParser(prog="liteasr profile-onnx", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", required=True, help="exported folders, DIR or DIR:TYPE")
    p.add_argument("--batch-size", type=int, default=1, help="30 s windows per run")
    p.add_argument("--runs", type=int, default=3, help="profiled runs after one untimed run")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--report", default=None, help="JSON report to write")
    args = p.parse_args(argv)
    report = profile_encoders(args.models, args.batch_size, args.runs, args.threads)
    report.update(run_provenance("liteasr profile-onnx " + shlex.join(sys.argv[1:] if argv is None else argv)))
    print(format_profiles(report), end="\n\n")
    print(format_part_profiles(report))
    if args.report:
        from liteasr_hf.evaluation.benchmark import write_report

        write_report(args.report, report)
    return 0

