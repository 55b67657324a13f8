"""Where an exported encoder spends its time, in ONNX Runtime's profiler: per operator kind, and per part of the
encoder (the convolutions, each linear module kind over all layers, attention's products of activations, the
rest) beside each part's FLOPs, so that a compressed encoder's time can be set against its FLOP reduction part by
part.

    liteasr profile-onnx --models onnx/whisper-base:q8 onnx/lite-whisper-base-fast:q8 --threads 2
"""

from __future__ import annotations

import ast
import json
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnx

from ...models.lite_whisper.configuration_lite_whisper import LOW_RANK_MODULES
from .layout import DTYPE_SUFFIXES, ENCODER, SUBFOLDER, OnnxLayout
from .runtime import session_options

#: The parts of an encoder its time is split into, in table order. ``attention``: the products of activations and
#: the softmax, and in a layer that attends in the rank space its q, k, v work too (that path reads the projections'
#: weights itself). ``other``: norms, residual additions, GELU, the position table, the quantization of an input
#: that several products share, nodes ONNX Runtime adds.
PARTS = ("convolutions", *LOW_RANK_MODULES, "attention", "other")
_MODULE_SCOPE = re.compile(r"encoder\.layers\.\d+\.(?:self_attn\.)?(" + "|".join(LOW_RANK_MODULES) + r")$")
_ATTENTION_SCOPE = re.compile(r"encoder\.layers\.\d+\.self_attn$")
_CONVOLUTION_SCOPE = re.compile(r"(?:^|\.)encoder\.conv[12]$")
# what onnxruntime.quantization appends to the name of a node it replaces by its 8-bit form
_QUANTIZED_SUFFIX = "_quant"


def encoder_part(node: onnx.NodeProto) -> str | None:
    """The part of the encoder (one of :data:`PARTS`) ``node`` was exported from, read from the module scopes that
    ``torch.onnx.export`` records on each node; None for a node without them (one a later pass wrote)."""
    for prop in node.metadata_props:
        if prop.key != "pkg.torch.onnx.name_scopes":
            continue
        try:  # a list of module names, written as a Python literal (never evaluated as code)
            scopes = [s for s in ast.literal_eval(prop.value) if isinstance(s, str)]
        except (ValueError, SyntaxError):
            return None
        for scope in reversed(scopes):  # the innermost module decides
            if m := _MODULE_SCOPE.search(scope):
                return m.group(1)
            if _ATTENTION_SCOPE.search(scope):
                return "attention"
            if _CONVOLUTION_SCOPE.search(scope):
                return "convolutions"
        return "other"
    return None


def node_parts(path: str | os.PathLike) -> dict[str, str]:
    """Node name -> :func:`encoder_part` for the encoder file ``path``. A node that the 8-bit quantizer wrote in
    place of an exported one (``NAME_quant``) takes that node's part, looked up in ``path`` or, where the quantizer
    dropped it, in the fp32 encoder beside it; any other node is ``other``."""
    path = Path(path)
    graphs = [onnx.load(str(path), load_external_data=False)]
    fp32 = path.with_name(f"{ENCODER}{DTYPE_SUFFIXES['fp32']}.onnx")
    if fp32 != path and fp32.is_file():
        graphs.append(onnx.load(str(fp32), load_external_data=False))
    scoped: dict[str, str] = {}
    for graph in reversed(graphs):  # the profiled file's own scopes win
        scoped.update({n.name: part for n in graph.graph.node if (part := encoder_part(n)) is not None})
    parts = {}
    for node in graphs[0].graph.node:
        original = node.name.removesuffix(_QUANTIZED_SUFFIX)
        parts[node.name] = scoped.get(node.name) or scoped.get(original) or "other"
    return parts


def profile_encoder(path: str | os.PathLike, batch_size: int = 1, runs: int = 3, threads: int | None = None,
                    num_mel_bins: int = 80) -> dict[str, dict[str, float]]:
    """Milliseconds per run that the encoder file ``path`` spends in each operator kind (``operators``) and in each
    of :data:`PARTS` (``parts``, by :func:`node_parts`; a node ONNX Runtime adds or fuses counts as ``other``), in
    ONNX Runtime's profiler over ``runs`` runs after one untimed run on random 30 s inputs; each with ``total``."""
    import onnxruntime as ort

    options = session_options(threads)
    with tempfile.TemporaryDirectory() as folder:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(folder) / "encoder")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        features = np.random.default_rng(0).standard_normal((batch_size, num_mel_bins, 3000), dtype=np.float32)
        for _ in range(runs + 1):  # the first run, which allocates, is left out below
            session.run(None, {"input_features": features})
        events = json.loads(Path(session.end_profiling()).read_text())
    # the first run's events come before the timed runs' ones: skip as many node events as one run has
    nodes = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    per_run = len(nodes) // (runs + 1)
    parts_of = node_parts(path)
    operators: dict[str, float] = {}
    parts: dict[str, float] = dict.fromkeys(PARTS, 0.0)
    for event in nodes[per_run:]:
        ms = event["dur"] / 1000 / runs
        kind = event["args"].get("op_name", "?")
        operators[kind] = operators.get(kind, 0.0) + ms
        parts[parts_of.get(event["name"].removesuffix("_kernel_time"), "other")] += ms

    def rounded(totals: dict[str, float], order) -> dict[str, float]:
        return {**{k: round(totals[k], 2) for k in order}, "total": round(sum(totals.values()), 2)}

    return {"operators": rounded(operators, sorted(operators, key=lambda k: -operators[k])),
            "parts": rounded(parts, PARTS)}


def profile_encoders(specs: Sequence[str], batch_size: int = 1, runs: int = 3, threads: int | None = None) -> dict:
    """:func:`profile_encoder` of the encoder of every exported ``DIR[:dtype]``, by spec (``profiles_ms``: per
    operator kind; ``parts_ms``: per part), with each part's GFLOPs at ``batch_size`` (``parts_gflops``; absent for
    an encoder that attends in the rank space), the machine and versions."""
    import onnxruntime
    import torch
    from transformers import AutoConfig

    from ...compression.cost import encoder_flops_by_part
    from ...evaluation.reporting import library_versions, machine_info
    from .benchmark import parse_model_spec

    operators, parts, gflops = {}, {}, {}
    for spec in specs:
        folder, dtype = parse_model_spec(spec)
        config = AutoConfig.from_pretrained(folder)
        path = folder / SUBFOLDER / OnnxLayout.from_config(config).file_name(ENCODER, dtype)
        profile = profile_encoder(path, batch_size, runs, threads, config.num_mel_bins)
        operators[str(spec)], parts[str(spec)] = profile["operators"], profile["parts"]
        flops = encoder_flops_by_part(config)
        if flops is not None:
            gflops[str(spec)] = {k: round(batch_size * v / 1e9, 3) for k, v in flops.items()}
    return {"batch_size": batch_size, "runs": runs, "threads": threads, "profiles_ms": operators,
            "parts_ms": parts, "parts_gflops": gflops, "machine": machine_info(torch.device("cpu")),
            "onnxruntime": onnxruntime.__version__, **library_versions(),
            "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _column(spec: str) -> str:
    # a spec's folder and the one above it name the model and its scheme (compare-q8 writes MODEL/SCHEME)
    return "/".join(Path(str(spec)).parts[-2:])


def _note(report: Mapping, what: str) -> str:
    return (f"ONNX Runtime's profiler: milliseconds per run {what}, batch {report['batch_size']}, mean of "
            f"{report['runs']} runs after one untimed run, {report.get('threads') or 'default'} threads.")


def format_profiles(report: Mapping) -> str:
    """:func:`profile_encoders`'s report as Markdown: milliseconds per run in each operator kind (a row, largest in
    the first encoder first), one column per encoder, the total last."""
    from ...evaluation.reporting import markdown_table

    profiles = report["profiles_ms"]
    if not profiles:
        raise ValueError("The profile report holds no encoder.")
    kinds: list[str] = []
    for profile in profiles.values():
        kinds += [k for k in profile if k != "total" and k not in kinds]
    first = next(iter(profiles.values()))
    kinds.sort(key=lambda k: -first.get(k, 0.0))
    table = [("operator kind", *(_column(spec) for spec in profiles))]
    for kind in [*kinds, "total"]:
        table.append((kind if kind != "total" else "**total**",
                      *(f"{p[kind]:.1f}" if kind in p else "-" for p in profiles.values())))
    return "\n".join([*markdown_table(table), "", _note(report, "in each operator kind")])


def format_part_profiles(report: Mapping) -> str:
    """:func:`profile_encoders`'s report as Markdown, per part of the encoder (a row each, the total last):
    milliseconds and GFLOPs per encoder and, for every encoder after the first, its speed-up over the first
    divided by its FLOP reduction, part by part (1.00: the part gets as much faster as its FLOPs shrink); a last row
    gives each encoder's :func:`scaled_total_ms` against the first."""
    from ...evaluation.reporting import markdown_table

    parts_ms = report.get("parts_ms")
    if not parts_ms:
        raise ValueError("The profile report holds no time per part of the encoder: profile again with today's "
                         "`liteasr profile-onnx`, which records it.")
    gflops = report.get("parts_gflops") or {}
    specs = list(parts_ms)
    first = specs[0]
    header = []
    for i, spec in enumerate(specs):
        header += [f"{_column(spec)} ms", f"{_column(spec)} GFLOPs"]
        if i:
            header.append(f"{_column(spec)} speed-up / FLOP red.")
    table = [("part", *header)]
    for part in [*PARTS, "total"]:
        cells = []
        for i, spec in enumerate(specs):
            ms, flops = parts_ms[spec].get(part), _part_gflops(gflops.get(spec), part)
            cells += [f"{ms:.1f}" if ms is not None else "-", f"{flops:.2f}" if flops is not None else "-"]
            if i:
                first_ms, first_flops = parts_ms[first].get(part), _part_gflops(gflops.get(first), part)
                known = all(v for v in (ms, flops, first_ms, first_flops))
                cells.append(f"{(first_ms / ms) / (first_flops / flops):.2f}" if known else "-")
        table.append((part if part != "total" else "**total**", *cells))
    table.append(_scaled_row(specs, parts_ms, gflops))
    return "\n".join([*markdown_table(table), "", _note(report, "in each part of the encoder") + " GFLOPs count "
                      "the products (2 per multiply-add) at that batch; `other` (norms, residual additions, GELU, "
                      "shared quantization) has none counted. The last row is each encoder's time had every part "
                      "with FLOPs taken the first encoder's time for it scaled by its FLOPs (`other` as measured): "
                      "the most its speed-up over the first can be with no part faster per FLOP than there."])


def scaled_total_ms(parts_ms: Mapping[str, Mapping[str, float]], gflops: Mapping[str, Mapping[str, float]],
                    reference: str, spec: str) -> float | None:
    """Encoder ``spec``'s time (ms) had each of its parts with FLOPs run exactly as many times faster than in
    encoder ``reference`` as its FLOPs shrink, its ``other`` part as measured; None where a part's time or FLOPs
    is unknown. ``reference``'s total over this is the speed-up that per-FLOP parity with the reference allows."""
    total = parts_ms[spec].get("other", 0.0)
    for part in PARTS[:-1]:
        ms, flops = parts_ms[reference].get(part), _part_gflops(gflops.get(reference), part)
        own = _part_gflops(gflops.get(spec), part)
        if ms is None or flops is None or own is None:
            return None
        total += ms * own / flops if flops else 0.0
    return total


def _scaled_row(specs: Sequence[str], parts_ms: Mapping, gflops: Mapping) -> tuple[str, ...]:
    first = specs[0]
    first_total, first_flops = parts_ms[first].get("total"), _part_gflops(gflops.get(first), "total")
    cells = ["-", "-"]
    for spec in specs[1:]:
        scaled, flops = scaled_total_ms(parts_ms, gflops, first, spec), _part_gflops(gflops.get(spec), "total")
        known = scaled and flops and first_total and first_flops
        cells += [f"{scaled:.1f}" if scaled else "-", f"{flops:.2f}" if flops else "-",
                  f"{(first_total / scaled) / (first_flops / flops):.2f}" if known else "-"]
    return ("**total at the first's ms per GFLOP, part by part**", *cells)


def _part_gflops(gflops: Mapping[str, float] | None, part: str) -> float | None:
    if gflops is None or part == "other":
        return None
    return round(sum(gflops.values()), 3) if part == "total" else gflops.get(part)
