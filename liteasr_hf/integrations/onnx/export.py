"""Export a Whisper or LiteWhisper model to an ONNX folder that ONNX Runtime, transformers.js and onnx-asr load.

The exporter is ``torch.onnx.export`` (the dynamo-based one), over the modules of :mod:`.graphs`; the two decoder
graphs are merged by :mod:`.merge`. optimum-onnx, the maintained Whisper exporter, pins transformers < 4.58 and
does not import with transformers 5, which this project requires.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
from tqdm.auto import tqdm

from ...atomic import atomic_directory, check_distinct, fault_point
from ...data.speech import SpeechSource
from ...portable import portable_path
from .calibration import CALIBRATION_WINDOWS, PACK_SECONDS, CalibrationAudio, calibration_features
from .client_files import write_client_files
from .fusion import CONTRIB_DOMAIN, fuse_encoder
from .graphs import DecoderGraph, EncoderGraph
from .layout import DECODER, ENCODER, PROTOBUF_LIMIT, SUBFOLDER, OnnxLayout
from .merge import merge_decoders
from .quantization import (DEFAULT_Q8_SCHEME, Q8_SCHEMES, Q8Scheme, check_quantizations, quantize_file, quiet_logger,
                           to_fp16, weight_products)

OPSET = 18
EXTERNAL_DATA = ("auto", "always", "never")
EIGHT_BIT = ("q8", "int8", "uint8")
GRAPH_ALLOWANCE = 64 * 2**20  # bytes of a model besides its weights, generously (tiny.en's decoder: 0.3 MB)


def _export(module: torch.nn.Module, args: tuple, path: Path, input_names: list[str], output_names: list[str],
            dynamic_shapes, axes: dict[str, dict[int, str]], fuse: bool = False) -> dict[str, int]:
    """Export ``module`` to ``path``; with ``fuse``, its attention and GELUs fused (:mod:`.fusion`). Returns how many
    nodes of each fused operator it has."""
    module.eval()
    # torch.onnx warns, once per export, of every torchvision operator it cannot register without torchvision
    with torch.no_grad(), warnings.catch_warnings(), quiet_logger("torch.onnx._internal.exporter._registration"):
        # torch.onnx notes that dimensions sharing a constraint share a name: they are named after export.
        warnings.filterwarnings("ignore", message="# The axis name", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)", category=FutureWarning)
        program = torch.onnx.export(module, args, dynamo=True, input_names=input_names, output_names=output_names,
                                    dynamic_shapes=dynamic_shapes, opset_version=OPSET, optimize=True,
                                    verbose=False)
    model = _name_axes(program.model_proto, axes)
    fused = fuse_encoder(model) if fuse else {}
    onnx.save_model(model, path, save_as_external_data=True, location=f"{path.name}_data")
    return fused


def _name_axes(model: onnx.ModelProto, axes: dict[str, dict[int, str]]) -> onnx.ModelProto:
    """Give the symbolic dimensions of inputs and outputs the names clients and optimum use."""
    for value in [*model.graph.input, *model.graph.output]:
        for index, name in axes.get(value.name, {}).items():
            value.type.tensor_type.shape.dim[index].dim_param = name
    return model


def export_graphs(model: torch.nn.Module, workdir: Path, fuse: bool = True) -> dict[str, Path]:
    """Export the encoder and the two decoder graphs of ``model`` (fp32, eager attention) into ``workdir``;
    returns their paths under the keys ``encoder``, ``decoder`` (first step) and ``decoder_past``. With
    ``fuse`` every self-attention of the encoder becomes one ``MultiHeadAttention`` node and every GELU one ``Gelu``
    node (:mod:`.fusion`); a full attention left unfused (an exporter whose pattern it does not know) warns."""
    from torch.export import Dim

    layout = OnnxLayout.from_config(model.config)
    config = model.config
    batch = Dim("batch_size", min=1, max=1024)
    frames = 2 * config.max_source_positions
    features = torch.randn(2, config.num_mel_bins, frames)
    paths = {name: workdir / f"{name}.onnx" for name in ("encoder", "decoder", "decoder_past")}
    fused = _export(EncoderGraph(model), (features,), paths["encoder"], list(layout.encoder_inputs),
                    list(layout.encoder_outputs), {"input_features": {0: batch}}, layout.encoder_axes(),
                    fuse=fuse)
    full = _full_attention_layers(model)
    if fuse and fused["MultiHeadAttention"] != full:
        warnings.warn(f"Fused {fused['MultiHeadAttention']} of the encoder's {full} full self-attentions into "
                      "MultiHeadAttention: this exporter wrote a pattern that liteasr_hf.integrations.onnx.fusion "
                      "does not recognise, so the others stay as separate nodes (correct, slower).", stacklevel=2)

    # Example inputs of length >= 2 on every dynamic axis: torch.export specialises sizes 0 and 1.
    tokens = Dim("decoder_sequence_length", min=1, max=config.max_target_positions)
    past = Dim("past_decoder_sequence_length", min=1, max=config.max_target_positions)
    source = Dim("encoder_sequence_length_out", min=1, max=config.max_source_positions)
    with torch.no_grad():
        hidden = torch.randn(2, config.max_source_positions, config.d_model)
        ids = torch.full((2, 3), config.decoder_start_token_id, dtype=torch.long)
        first = DecoderGraph(model, with_past=False)
        presents = first(ids, hidden)[1:]
    _export(first, (ids, hidden), paths["decoder"], ["input_ids", "encoder_hidden_states"],
            layout.decoder_outputs(), ({0: batch, 1: tokens}, ({0: batch, 1: source},)), layout.decoder_axes())
    past_shapes = tuple({0: batch, 2: past if ".decoder." in name else source} for name in layout.past_names())
    _export(DecoderGraph(model, with_past=True), (ids[:, :2], *presents), paths["decoder_past"],
            ["input_ids", *layout.past_names()], layout.decoder_outputs(), ({0: batch, 1: tokens}, past_shapes),
            layout.decoder_axes())
    return paths


def _full_attention_layers(model: torch.nn.Module) -> int:
    """How many encoder layers of ``model`` attend over full heads in an export (not in LiteWhisper's rank space)."""
    encoder = model.get_encoder()
    if hasattr(encoder, "attention_paths"):
        return sum(path == "full" for path in encoder.attention_paths(device="cpu"))
    return model.config.encoder_layers


def fused_operators(path: Path) -> dict[str, int]:
    """How many nodes of each of ONNX Runtime's contrib operators the ONNX file at ``path`` has."""
    counts: dict[str, int] = {}
    for node in onnx.load(path, load_external_data=False).graph.node:
        if node.domain == CONTRIB_DOMAIN:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def _variant(source: Path, kind: str, workdir: Path, scheme: Q8Scheme, calibration: np.ndarray | None) -> Path:
    """``source`` quantized (or cast to fp16) into ``workdir``."""
    target = workdir / f"{source.stem}_{kind}.onnx"
    # Intermediate files keep their weights beside them: a large-v3 decoder is over protobuf's 2 GiB.
    if kind == "fp16":
        onnx.save_model(to_fp16(onnx.load(source)), target, save_as_external_data=True, location=f"{target.name}_data")
    else:
        quantize_file(source, target, kind, external_data=True, scheme=scheme, calibration=calibration)
    return target


def write_variant(graphs: dict[str, Path], kind: str, onnx_dir: Path, layout: OnnxLayout, external_data: str = "auto",
                  scheme: Q8Scheme = DEFAULT_Q8_SCHEME, calibration: np.ndarray | None = None) -> bool:
    """Write the encoder and merged decoder of weight type ``kind`` (``fp32``, a quantization, ``fp16``) from the
    graphs of :func:`export_graphs` into ``onnx_dir``, 8-bit kinds by ``scheme`` (the encoder's static activations
    calibrated on the log-mel windows ``calibration``); True when a file keeps its weights beside it."""
    work = graphs["encoder"].parent
    if kind == "fp32":
        files = graphs
    else:
        files = {k: _variant(p, kind, work, scheme, calibration if k == "encoder" else None) for k, p in graphs.items()}
    merged = merge_decoders(onnx.load(files["decoder"]), onnx.load(files["decoder_past"]), layout)
    external = False
    for graph, proto in ((ENCODER, onnx.load(files["encoder"])), (DECODER, merged)):
        target = onnx_dir / layout.file_name(graph, kind)
        external |= _save(proto, target, external_data)
        _check(target)
    return external


def _save(model: onnx.ModelProto, path: Path, external_data: str) -> bool:
    """Save ``model`` as one file, or with its weights in ``<file>_data`` when asked or when it must."""
    # The weights' bytes plus room for the graph: ByteSize of the whole model can itself pass protobuf's limit.
    size = sum(t.ByteSize() for t in model.graph.initializer) + GRAPH_ALLOWANCE
    external = external_data == "always" or (external_data == "auto" and size > PROTOBUF_LIMIT)
    if size > PROTOBUF_LIMIT and not external:
        raise ValueError(f"{path.name} would be {size / 2**30:.2f} GiB, over the 2 GiB limit of one ONNX file. "
                         "Export with external data (--external-data auto or always): the weights then go to "
                         f"{path.name}_data beside it.")
    if external:
        onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=f"{path.name}_data", size_threshold=1024)
    else:
        onnx.save_model(model, path)
    return external


def _scheme(scheme: str | Q8Scheme) -> Q8Scheme:
    if isinstance(scheme, Q8Scheme):
        return scheme
    if scheme not in Q8_SCHEMES:
        raise ValueError(f"Unknown q8 scheme {scheme!r}: choose from {', '.join(Q8_SCHEMES)}.")
    return Q8_SCHEMES[scheme]


def _check(path: Path) -> None:
    onnx.checker.check_model(str(path), full_check=False)


def export_onnx(
    model: str | os.PathLike,
    output: str | os.PathLike,
    *,
    quantize: Sequence[str] = (),
    fp16: bool = False,
    external_data: str = "auto",
    overwrite: bool = False,
    trust_remote_code: bool = False,
    progress: bool = True,
    q8_scheme: str | Q8Scheme = DEFAULT_Q8_SCHEME,
    calibration: SpeechSource | None = None,
    calibration_windows: int = CALIBRATION_WINDOWS,
    fuse: bool = True,
) -> Path:
    """Export the Whisper or LiteWhisper model at ``model`` to the folder ``output``; returns its path.

    ``output`` gets ``onnx/encoder_model.onnx`` and ``onnx/decoder_model_merged.onnx`` (fp32), one pair per
    entry of ``quantize`` (``q8``, ``int8``, ``uint8``, ``q4``) and with ``fp16`` an fp16 pair, plus the files
    the clients read beside ``onnx/`` and ``onnx/export_info.json`` (what was exported, how, the sizes). The
    folder appears only when complete; an existing one is replaced only with ``overwrite``. ``external_data``:
    ``auto`` stores weights beside a file only when it would pass protobuf's 2 GiB, ``never`` refuses then.
    ``q8_scheme`` (a :class:`~.quantization.Q8Scheme` or the name of one in ``Q8_SCHEMES``) says how the 8-bit kinds
    quantize; one that reads calibration audio measures the encoder on ``calibration_windows`` windows of
    ``calibration`` (default: the compressor's speaker mix). ``export_info.json`` records the scheme and the audio.
    ``fuse`` writes each of the encoder's self-attentions as one ONNX Runtime ``MultiHeadAttention`` node and each GELU
    as one ``Gelu`` (:mod:`.fusion`: the same functions, faster on CPU); ``False`` keeps the exporter's nodes.
    """
    from ...checkpoints.loading import WHISPER_TYPES, load_model_and_processor, read_config, resolve_model_path

    kinds = check_quantizations(quantize)
    scheme = _scheme(q8_scheme)
    if fuse and scheme.quantize_attention and any(k in EIGHT_BIT for k in kinds):
        raise ValueError(f"Q8 scheme {scheme.name!r} quantizes attention's products, which fusing puts into one "
                         "MultiHeadAttention node: export with fuse=False (--no-fuse).")
    if external_data not in EXTERNAL_DATA:
        raise ValueError(f"external_data={external_data!r}: choose from {', '.join(EXTERNAL_DATA)}.")
    output = Path(output)
    check_distinct(output, model)
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} exists: pass overwrite=True (--overwrite) to replace it.")

    path = Path(resolve_model_path(model))
    if path.is_dir():  # a local folder: refuse other models before loading anything
        model_type = read_config(path).get("model_type")
        if model_type not in WHISPER_TYPES:
            raise ValueError(f"{model} is a {model_type!r} model, not Whisper or LiteWhisper: the ONNX export takes "
                             "Whisper and LiteWhisper folders.")
    started = time.perf_counter()
    whisper, processor, path = load_model_and_processor(model, trust_remote_code=trust_remote_code,
                                                        attn_implementation="eager")
    model_type = whisper.config.model_type
    if model_type not in WHISPER_TYPES:
        raise ValueError(f"{model} is a {model_type!r} model; the ONNX export takes Whisper and LiteWhisper models.")
    whisper = whisper.float().eval()
    # The decoder is the larger graph; its fp32 weights alone tell whether one file can hold it.
    weights = 4 * sum(p.numel() for p in whisper.get_decoder().parameters())
    if external_data == "never" and weights > PROTOBUF_LIMIT:
        raise ValueError(f"The decoder's weights are {weights / 2**30:.2f} GiB, over the 2 GiB limit of one ONNX file "
                         "without external data. Export with external data (--external-data auto or always).")
    encoder_paths = (whisper.get_encoder().attention_paths(device="cpu")
                     if hasattr(whisper.get_encoder(), "attention_paths") else None)

    eight_bit = [k for k in kinds if k in EIGHT_BIT]
    calibrated, features = None, None
    if eight_bit and scheme.calibrated:
        from ...data.suite import speaker_mix

        source = calibration or speaker_mix(progress=progress)
        features = calibration_features(processor.feature_extractor, source, calibration_windows)
        calibrated = CalibrationAudio(portable_path(source.data), source.split, len(features), PACK_SECONDS,
                                      scheme.calibration_uses)
    steps = 3 + len(kinds) + int(fp16)  # the export, each variant (fp32 first), the client files
    bar = tqdm(total=steps, desc="Exporting to ONNX", unit="step", disable=not progress)
    with atomic_directory(output, overwrite=overwrite) as folder:
        # Intermediate graphs (GBs for large models) live in the output's temporary folder, not the system's: a
        # killed export leaves them where the next export to the same place removes them.
        work = folder / ".work"
        work.mkdir()
        onnx_dir = folder / SUBFOLDER
        onnx_dir.mkdir()
        bar.set_postfix_str("encoder and decoder graphs")
        graphs = export_graphs(whisper, work, fuse=fuse)
        fault_point("onnx-graphs-exported")
        bar.update()
        layout = OnnxLayout.from_config(whisper.config)
        external = False
        for kind in ("fp32", *kinds, *(["fp16"] if fp16 else [])):
            bar.set_postfix_str(kind)
            external |= write_variant(graphs, kind, onnx_dir, layout, external_data, scheme, features)
            bar.update()
        write_client_files(whisper, processor, folder, external_data=external)
        info = {
            "source": portable_path(model),  # a local folder by its name only: the file may be published
            "model_type": model_type,
            "exporter": f"torch.onnx.export (dynamo) torch {torch.__version__}, opset {OPSET}",
            "dtypes": ["fp32", *kinds, *(["fp16"] if fp16 else [])],
            "encoder_attention_paths": encoder_paths,
            # the encoder's nodes of ONNX Runtime's fused contrib operators (see .fusion)
            "encoder_fused_operators": fused_operators(graphs["encoder"]),
            # how the 8-bit kinds were quantized: the decoder always dynamically (see .quantization)
            "quantization": {kind: {"scheme": scheme.to_dict(), "decoder_activations": "dynamic",
                                    "calibration": calibrated.to_dict() if calibrated else None,
                                    # which of the encoder's weight products the scheme left in float
                                    "encoder_products": weight_products(onnx_dir / layout.file_name(ENCODER, kind))}
                             for kind in eight_bit},
            "files": {p.name: p.stat().st_size for p in sorted(onnx_dir.iterdir())},
            "seconds": round(time.perf_counter() - started, 1),
        }
        (onnx_dir / "export_info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        shutil.rmtree(work)
        bar.update()
    bar.close()
    return output
