"""Benchmark Whisper / LiteWhisper encoders (latency, throughput, peak memory, FLOPs) and transcription end to end.

    liteasr benchmark --models base models/lite-whisper-base-default models/lite-whisper-base-fast \
        --batch-sizes 1 8 --threads 2 --output results/benchmark-base-cpu.json
    liteasr benchmark --models tiny.en --batch-sizes 1 --repeats 1 --e2e-clips 4
    liteasr benchmark --models shape:large-v3 shape:large-v3@large-v3 shape:large-v3@large-v3-fast \
        --batch-sizes 1 --threads 2 --e2e-clips 0 --dtype bfloat16     # random weights, real shapes

In ONNX Runtime, over folders written by liteasr export-onnx (DIR for fp32, DIR:q8 and the like for a variant),
with faster-whisper on the same checkpoint beside them:

    liteasr benchmark --runtime onnxruntime --models onnx/whisper-base onnx/whisper-base:q8 \
        onnx/lite-whisper-base-default:q8 --threads 2 --e2e-clips 0 --e2e-batch-size 1 --faster-whisper base

The first model is the reference for the FLOP reduction and the speed-ups. Prints the tables and writes the
JSON report to --output.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import asdict

import torch

from ..checkpoints.placement import DTYPES
from ..data.suite import EVALUATION_MANIFEST
from ..evaluation.benchmark import (
    benchmark_attention_paths,
    format_attention_paths,
    format_table,
    run_benchmark,
    write_report,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="liteasr benchmark", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", required=True, metavar="MODEL",
                   help="model folders, Hub ids, packaged checkpoints (tiny.en, base), or random-weight models with real "
                        "shapes: shape:large-v3, shape:large-v3@large-v3-fast, shape:large-v3@0.55,attention=48 "
                        "(encoders only: --e2e-clips 0); the first is the reference")
    p.add_argument("--runtime", choices=("torch", "onnxruntime"), default="torch",
                   help="PyTorch eager on the model folders, or ONNX Runtime on exported folders (DIR[:TYPE])")
    p.add_argument("--faster-whisper", nargs="+", default=None, metavar="CT2",
                   help="onnxruntime only: also transcribe with faster-whisper on these CTranslate2 folders or "
                        "packaged checkpoints (tiny.en, base)")
    p.add_argument("--compute-types", nargs="+", default=["int8", "float32"],
                   help="faster-whisper compute types (CTranslate2's)")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    p.add_argument("--repeats", type=int, default=5, help="timed rounds (each runs every model once)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (at least 1)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                   help="torch.compile the encoders (compilation is timed apart)")
    p.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True,
                   help="measure the peak memory of one forward pass")
    p.add_argument("--data", default=str(EVALUATION_MANIFEST),
                   help="speech for the end-to-end timing (default: every shipped evaluation split, real speakers and "
                        "synthetic voices; ONNX Runtime runs report WER per speaker group)")
    p.add_argument("--split", default="evaluation")
    p.add_argument("--e2e-clips", type=int, default=16, help="clips transcribed end to end (0: skip; -1: all)")
    p.add_argument("--e2e-batch-size", type=int, default=8)
    p.add_argument("--e2e-repeats", type=int, default=3)
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="onnxruntime only: stop every system's transcription of a clip after this many tokens "
                        "(default: the decoder's length), so that a runaway costs each system the same")
    p.add_argument("--output", default="results/benchmark.json", help="JSON report")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="run code shipped with a model (its auto_map): only for repos whose code you have read; LiteWhisper and Whisper models never need it")
    p.add_argument("--attention-sweep", nargs="*", type=int, metavar="RANK", default=None,
                   help="also time one self-attention layer of the first model's size on both attention paths "
                        "at these q/k/v ranks (default 16 32 48 64 96 128) and show what the cost model picks")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.command = shlex.join(["liteasr", "benchmark", *(sys.argv[1:] if argv is None else argv)])
    if args.runtime == "onnxruntime":
        return _main_onnxruntime(args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        report = run_benchmark(
            args.models, batch_sizes=args.batch_sizes, repeats=args.repeats, warmup=args.warmup,
            device=args.device, dtype=DTYPES[args.dtype], compile=args.compile, measure_memory=args.memory,
            data=args.data, split=args.split, e2e_clips=args.e2e_clips, e2e_batch_size=args.e2e_batch_size,
            e2e_repeats=args.e2e_repeats, output=args.output, trust_remote_code=args.trust_remote_code,
            command=args.command,
        )
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: no report written", file=sys.stderr)
        return 130
    print(format_table(report))
    if args.attention_sweep is not None:
        first = report["models"][0]
        rows = benchmark_attention_paths(
            first["d_model"], first["encoder_attention_heads"], first["max_source_positions"],
            ranks=args.attention_sweep or (16, 32, 48, 64, 96, 128), batch_sizes=args.batch_sizes,
            repeats=args.repeats, warmup=args.warmup, device=args.device, dtype=DTYPES[args.dtype],
        )
        report["attention_paths"] = [asdict(r) for r in rows]
        write_report(args.output, report)
        print("\nOne self-attention layer, both paths (low-rank q, k, v at each rank):")
        print(format_attention_paths(rows))
    print(f"\nWrote {args.output}")
    return 0


def _main_onnxruntime(args: argparse.Namespace) -> int:
    from ..integrations.onnx.benchmark import format_onnx_table, run_onnx_benchmark, transcripts_path

    try:
        report = run_onnx_benchmark(
            args.models, batch_sizes=args.batch_sizes, repeats=args.repeats, warmup=args.warmup, threads=args.threads,
            data=args.data, split=args.split, clips=None if args.e2e_clips < 0 else args.e2e_clips,
            e2e_batch_size=args.e2e_batch_size, e2e_repeats=args.e2e_repeats, faster_whisper=args.faster_whisper,
            compute_types=args.compute_types, max_new_tokens=args.max_new_tokens, output=args.output,
            command=args.command,
        )
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_onnx_table(report))
    print(f"\nWrote {args.output}" + (f" and {transcripts_path(args.output)}" if report["systems"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
