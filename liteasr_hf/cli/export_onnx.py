"""Export a Whisper or LiteWhisper model to ONNX for ONNX Runtime, transformers.js and onnx-asr.

    liteasr export-onnx --model models/lite-whisper-base-default \
        --output models/lite-whisper-base-default-onnx
    liteasr export-onnx --model base --output models/whisper-base-onnx --quantize q8 int8

The output holds onnx/encoder_model.onnx and onnx/decoder_model_merged.onnx (optimum's layout and names), one
suffixed pair per --quantize entry (q8 -> *_quantized.onnx, int8, uint8, q4) and with --fp16 a *_fp16 pair, and the
config, tokenizer and vocabulary files the clients read. The folder appears only when complete.
A published efficient-speech/lite-whisper-* repo carries no tokenizer: run liteasr upgrade-published first.
"""

from __future__ import annotations

import argparse
import sys

from ..integrations.onnx.export import EXTERNAL_DATA, export_onnx
from ..integrations.onnx.layout import QUANTIZATIONS
from ..integrations.onnx.quantization import DEFAULT_Q8_SCHEME, Q8_SCHEMES


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="liteasr export-onnx", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="Whisper or LiteWhisper folder, Hub id, or packaged checkpoint")
    p.add_argument("--output", required=True, help="folder to write")
    p.add_argument("--quantize", nargs="*", default=[], metavar="KIND",
                   help=f"quantized variants to add: {', '.join(QUANTIZATIONS)}")
    p.add_argument("--q8-scheme", choices=list(Q8_SCHEMES), default=DEFAULT_Q8_SCHEME.name,
                   help="how q8, int8 and uint8 quantize (liteasr_hf.integrations.onnx.quantization.Q8_SCHEMES); "
                        "schemes that read calibration audio measure the encoder on the speaker mix")
    p.add_argument("--fp16", action="store_true", help="add an fp16 variant (*_fp16.onnx)")
    p.add_argument("--external-data", choices=EXTERNAL_DATA, default="auto",
                   help="weights in <file>.onnx_data: only past protobuf's 2 GiB (auto), always, or never")
    p.add_argument("--no-fuse", dest="fuse", action="store_false",
                   help="keep the encoder's attention and GELUs as the exporter writes them (separate MatMul, Softmax, "
                        "Erf... nodes) instead of ONNX Runtime's MultiHeadAttention and Gelu, for a runtime without "
                        "Microsoft's contrib operators")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow code shipped with the model to run (read it first)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        folder = export_onnx(args.model, args.output, quantize=args.quantize, fp16=args.fp16,
                             external_data=args.external_data, overwrite=args.overwrite,
                             trust_remote_code=args.trust_remote_code, q8_scheme=args.q8_scheme,
                             fuse=args.fuse)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path in sorted((folder / "onnx").iterdir()):
        print(f"{path.stat().st_size / 2**20:9.1f} MiB  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
