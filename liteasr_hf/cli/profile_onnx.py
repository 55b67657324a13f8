"""Where exported encoders spend their time, per operator kind and per part of the encoder, in ONNX Runtime's
profiler (:func:`liteasr_hf.integrations.onnx.profiling.profile_encoders`):

    liteasr profile-onnx --models exp/whisper-tiny.en:q8 exp/lite-tiny:q8 --threads 2 \\
        --report docs/results/q8-tiny-profile.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys


def main(argv: list[str] | None = None) -> int:
    from liteasr_hf.evaluation.reporting import run_provenance
    from liteasr_hf.integrations.onnx.profiling import profile_encoders

    p = argparse.ArgumentParser(prog="liteasr profile-onnx", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", required=True, help="exported folders, DIR or DIR:TYPE")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--runs", type=int, default=3, help="profiled runs after one untimed run")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--report", default=None, help="JSON report to write")
    args = p.parse_args(argv)
    report = profile_encoders(args.models, args.batch_size, args.runs, args.threads)
    report.update(run_provenance("liteasr profile-onnx " + shlex.join(sys.argv[1:] if argv is None else argv)))
    for spec, profile in report["profiles_ms"].items():
        print(spec, json.dumps(profile))
        print(spec, json.dumps(report["parts_ms"][spec]))
    if args.report:
        from liteasr_hf.evaluation.benchmark import write_report

        write_report(args.report, report)
    return 0

