"""Heal an existing LiteWhisper model: distil its encoder factors against the dense Whisper it came from.

    liteasr heal --model models/lite-whisper-base-fast --output models/lite-whisper-base-fast-healed
    liteasr heal --model efficient-speech/lite-whisper-large-v3 --teacher openai/whisper-large-v3 \
        --data mozilla-foundation/common_voice_17_0 --split train --num-samples 256 --output ...

Label-free: the audio needs no text. The heal settings come from --preset/--config (its `heal:` entry), and the
options below override them. The output folder appears only when complete.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys

from ..checkpoints.placement import DTYPES, Placement
from ..compression.checkpoint import heal_checkpoint
from ..compression.healing import describe_healing
from ..compression.presets import load_settings
from ..compression.settings import LOSSES, WINDOWS, HealSettings
from ..data.speech import SpeechSource
from ..parallel import Processes, process_group

OVERRIDES = ("block_steps", "steps", "lr", "batch_size", "loss", "num_samples", "holdout", "patience", "windows",
             "piece_seconds", "speech_share")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="liteasr heal", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="LiteWhisper folder or Hub id")
    p.add_argument("--teacher", default=None,
                   help="the dense Whisper it was compressed from (default: as its compression_report.json says)")
    p.add_argument("--output", required=True, help="folder to write")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--preset", help="preset in configs/ whose `heal:` settings to use")
    group.add_argument("--config", help="preset YAML file whose `heal:` settings to use")
    p.add_argument("--data", default=None, help="healing audio, unlabelled: folder, manifest or datasets name "
                   "(default: the calibration mix of liteasr_hf.data.suite, built on first use; it stops on the development speakers)")
    p.add_argument("--split", default=None)
    p.add_argument("--holdout-data", default=None,
                   help="speech of other speakers to stop on, unlabelled (default: the development speakers with the "
                        "default audio; with --data, a share of it)")
    p.add_argument("--holdout-split", default=None)
    p.add_argument("--audio-column", default="audio")
    p.add_argument("--block-steps", type=int, default=None, help="steps per encoder layer (0 skips that stage)")
    p.add_argument("--steps", type=int, default=None, help="end-to-end steps (0 skips that stage)")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--loss", choices=LOSSES, default=None,
                   help="end-to-end loss: on the encoder's output (cosine, mse), or on what the decoder says from it "
                        "(decoder: the KL divergence of its next-token distributions on the dense model's transcripts)")
    p.add_argument("--num-samples", type=int, default=None, help="windows of healing audio")
    p.add_argument("--windows", choices=WINDOWS, default=None,
                   help="pieces: one 2-8 s piece of a clip per window, padded as at inference; packed: clips joined")
    p.add_argument("--piece-seconds", type=float, nargs=2, default=None, metavar=("SHORTEST", "LONGEST"))
    p.add_argument("--speech-share", type=float, default=None,
                   help="share of each window's loss on the positions holding its audio, the rest on its padding "
                        "(default: every position alike)")
    p.add_argument("--holdout", type=float, default=None, help="share of the windows held out for early stopping")
    p.add_argument("--patience", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    return p.parse_args(argv)


def heal_settings(args: argparse.Namespace) -> HealSettings:
    """The preset's heal settings (or the defaults) with the command line's overrides."""
    preset = args.config or args.preset
    base = (load_settings(preset).heal if preset else None) or HealSettings()
    overrides = {name: getattr(args, name) for name in OVERRIDES if getattr(args, name) is not None}
    return HealSettings.from_dict({**dataclasses.asdict(base), **overrides})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    processes = Processes()
    try:
        if args.holdout_split is not None and args.holdout_data is None:
            raise ValueError("--holdout-split names a split of --holdout-data: give --holdout-data too.")
        settings = heal_settings(args)
        audio = (SpeechSource(args.data, split=args.split, audio_column=args.audio_column, text_column=None)
                 if args.data else None)
        holdout = (SpeechSource(args.holdout_data, split=args.holdout_split, audio_column=args.audio_column,
                                text_column=None) if args.holdout_data else None)
        # Under torchrun / accelerate launch each process heals on its share of every batch; alone, one process.
        with process_group(args.device) as processes:
            folder, report = heal_checkpoint(args.model, args.output, teacher=args.teacher, audio=audio,
                                             holdout=holdout,
                                             settings=settings, placement=Placement(processes.device(args.device),
                                                                                    args.dtype),
                                             overwrite=args.overwrite, processes=processes,
                                             command=shlex.join(["liteasr", "heal", *(sys.argv[1:] if argv is None
                                                                                       else argv)]))
    except (ValueError, FileNotFoundError, FileExistsError, OSError) as err:
        print(f"error{processes.label}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted{processes.label}: no folder written", file=sys.stderr)
        return 130
    if not processes.is_main:
        return 0
    for stage in report.stages:
        print(f"{stage.stage}: {stage.steps} steps, held-out loss {stage.holdout_loss_before:.4g} -> "
              f"{stage.holdout_loss_after:.4g}")
    print(describe_healing(report))
    print(f"Wrote {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
