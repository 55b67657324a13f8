"""Throughput and latency of Whisper and LiteWhisper models served by vLLM, one server at a time on 127.0.0.1.

Run it with the interpreter of an environment that has vLLM (`make setup-vllm` makes .venv-vllm):

    .venv-vllm/bin/liteasr benchmark-vllm --models whisper-base=models/whisper-base \
        lite-whisper-base=models/lite-whisper-base-default --requests 48 --concurrency 8 --rounds 2

Each model is served with the --server-arg values (default: float32, eager, 448 positions), sent --requests
utterances of the speech set (cycled), --concurrency at a time, through /v1/audio/transcriptions. It prints audio
seconds per second, latency percentiles and the WER of the answers, and writes a JSON report.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from ..atomic import atomic_write_text
from ..data.speech import SHIPPED_SPEECH_SET, load_speech
from ..evaluation.reporting import run_provenance
from ..integrations.vllm.benchmark import benchmark_served_models

DEFAULT_SERVER_ARGS = ["--dtype", "float32", "--max-model-len", "448", "--enforce-eager"]


def _model(spec: str) -> tuple[str, str]:
    label, sep, path = spec.partition("=")
    return (label, path) if sep else (spec.rstrip("/").rsplit("/", 1)[-1], spec)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="liteasr benchmark-vllm", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", required=True, type=_model, metavar="[LABEL=]MODEL",
                   help="folders or Hub ids to serve, in this order; the first is the reference of the ratios")
    p.add_argument("--requests", type=int, default=32)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--rounds", type=int, default=1, help="serve the whole sequence this many times; best round kept")
    p.add_argument("--data", default=str(SHIPPED_SPEECH_SET), help="speech data (folder, or datasets name)")
    p.add_argument("--split", default="evaluation")
    p.add_argument("--max-samples", type=int, default=None, help="distinct utterances to send (default: all)")
    p.add_argument("--language", default="en", help="language of every request ('' lets vLLM detect it)")
    p.add_argument("--server-arg", action="append", default=None, metavar="ARG",
                   help=f"argument for each server, repeat for several (default: {' '.join(DEFAULT_SERVER_ARGS)})")
    p.add_argument("--kv-cache-gib", type=float, default=2.0,
                   help="KV cache on the CPU backend (VLLM_CPU_KVCACHE_SPACE); ignored on GPUs")
    p.add_argument("--output", default="results/benchmark-vllm.json", help="JSON report")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        utterances, failures = load_speech(args.data, split=args.split, max_samples=args.max_samples)
        if failures:
            print(f"warning: {len(failures)} utterances could not be loaded, e.g. {failures[0].reason}",
                  file=sys.stderr)
        report = benchmark_served_models(
            args.models, utterances, requests=args.requests, concurrency=args.concurrency, rounds=args.rounds,
            server_args=args.server_arg or DEFAULT_SERVER_ARGS,
            server_env={"VLLM_CPU_KVCACHE_SPACE": f"{args.kv_cache_gib:g}"}, language=args.language or None)
    except (ValueError, FileNotFoundError, OSError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: no report written", file=sys.stderr)
        return 130
    # The command line, date, machine and commit, so that a table of this report can say where it came from.
    report.update(run_provenance(shlex.join(["liteasr", "benchmark-vllm", *(sys.argv[1:] if argv is None else argv)])))
    print(report["table"])
    for entry in report["models"]:
        if "wer" in entry:
            print(f"{entry['label']}: WER {entry['wer']:.2f} on {entry['wer_utterances']} utterances")
    atomic_write_text(args.output, json.dumps(report, indent=2) + "\n")
    print(f"\nWrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
