"""Evaluate Whisper / LiteWhisper models: WER and RTFx as the Open ASR Leaderboard computes them.

    liteasr evaluate --model models/lite-whisper-base-default
    liteasr evaluate --compare base models/lite-whisper-base-default --batch-size 16
    liteasr evaluate --model openai/whisper-tiny --data openslr/librispeech_asr --config clean --split test

Writes <model>__<data>-<split>.jsonl (one record per utterance) and .summary.json into --output.

On several processes, each transcribing its share (the main process writes the results):

    torchrun --nproc_per_node 2 -m liteasr_hf.cli evaluate --model models/lite-whisper-base-default --device cuda
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from ..checkpoints.placement import DTYPES
from ..data.suite import EVALUATION_MANIFEST
from ..evaluation.transcription import compare_models, evaluate_model
from ..parallel import Processes, process_group


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="liteasr evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    models = p.add_mutually_exclusive_group(required=True)
    models.add_argument("--model", help="model folder, Hub id or packaged checkpoint (tiny.en, base)")
    models.add_argument("--compare", nargs="+", metavar="MODEL", help="several models on the same data, one table")
    p.add_argument("--data", default=str(EVALUATION_MANIFEST),
                   help="audiofolder, folder of splits, manifest or datasets name (default: every shipped evaluation "
                        "split, real speakers and synthetic voices, with WER per speaker group)")
    p.add_argument("--config", default=None, help="datasets configuration name")
    p.add_argument("--split", default="evaluation")
    p.add_argument("--text-column", default="text")
    p.add_argument("--audio-column", default="audio")
    p.add_argument("--id-column", default=None)
    p.add_argument("--num-samples", type=int, default=None, help="evaluate the first N utterances only")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    p.add_argument("--language", default="en", help="passed to multilingual models only; 'none' to auto-detect")
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--output", default="results", help="folder for the JSONL records and summaries")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="run code shipped with a model (its auto_map): only for repos whose code you have read; LiteWhisper and Whisper models never need it")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.command = shlex.join(["liteasr", "evaluate", *(sys.argv[1:] if argv is None else argv)])
    processes = Processes()
    try:
        with process_group(args.device) as processes:
            return run(args, processes)
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"error{processes.label}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted{processes.label}: the model being evaluated wrote no results", file=sys.stderr)
        return 130


def run(args: argparse.Namespace, processes: Processes) -> int:
    """Evaluate as ``args`` say, on this process's share when there are several."""
    common = dict(
        data=args.data, split=args.split, config=args.config, text_column=args.text_column,
        audio_column=args.audio_column, id_column=args.id_column, num_samples=args.num_samples,
        batch_size=args.batch_size, device=args.device, dtype=DTYPES[args.dtype],
        language=None if args.language.lower() == "none" else args.language,
        max_new_tokens=args.max_new_tokens, output=args.output, trust_remote_code=args.trust_remote_code,
        command=args.command,
    )
    if processes.distributed:  # not passed otherwise: a one-process run calls exactly what it always did
        common["processes"] = processes
    if args.compare:
        compare_models(args.compare, **common)
    else:
        summary = evaluate_model(args.model, **common)
        if processes.is_main:
            print(json.dumps({"model": summary.model, "n_scored": summary.n_scored, "n_failed": summary.n_failed,
                              "wer": summary.wer, "rtfx": summary.rtfx, "encoder_params": summary.encoder_params,
                              "n_long_outputs": summary.n_long_outputs}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
