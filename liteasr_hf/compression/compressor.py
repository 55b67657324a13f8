"""LiteASR compression of a Whisper encoder: calibrate, choose ranks, factorize, return a LiteWhisper model.

Two calibration schemes:
- ``sequential=False`` is the paper's recipe: every layer's statistics come from the dense model.
- ``sequential=True`` (default): layer ``l`` is calibrated on the outputs of layers ``0..l-1`` already
  factorized, so each factorization sees, and corrects for, the error of the ones before it.

On several processes (:mod:`liteasr_hf.parallel`) each calibrates on its share of the windows and the sums are
added up per layer before any process factorizes it, so every process builds the same model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

from ..data.windows import pack_clips
from ..models.lite_whisper.configuration_lite_whisper import LOW_RANK_MODULES, LiteWhisperConfig, module_shapes
from ..models.lite_whisper.modeling_lite_whisper import LiteWhisperForConditionalGeneration
from ..parallel import Processes
from .calibration import collect_output_statistics, run_batches
from .cost import encoder_cost, module_cost
from .factorization import encoder_module_path, factorize_linear, set_submodule
from .memory import release_freed_memory
from .pca import PrincipalComponents, principal_components_of
from .rank_selection import (
    RankPlan,
    module_kind,
    plan_by_budget,
    plan_by_threshold,
    rank_for_threshold,
    saves_parameters,
)
from .report import CalibrationRun, CompressionReport, EncoderSize, ModuleReport
from .sensitivity import module_sensitivities
from .settings import CompressionSettings

# Above this many bytes of float64 statistics, the planning pass runs layer by layer instead of in one go.
_ONE_PASS_STATS_BYTES = 2 * 1024**3


@dataclass
class CompressionResult:
    model: LiteWhisperForConditionalGeneration
    plan: RankPlan
    report: CompressionReport


def _encoder_linears(model: WhisperForConditionalGeneration, layer: int, modules: Sequence[str]) -> dict[str, nn.Module]:
    block = model.model.encoder.layers[layer]
    return {m: (block.self_attn if m in ("q_proj", "k_proj", "v_proj", "out_proj") else block).get_submodule(m) for m in modules}


def compress(
    model: WhisperForConditionalGeneration,
    clips: Iterable[np.ndarray],
    feature_extractor: WhisperFeatureExtractor,
    settings: CompressionSettings | None = None,
    plan: RankPlan | None = None,
    progress: bool = True,
    processes: Processes | None = None,
) -> CompressionResult:
    """Compress ``model``'s encoder with LiteASR; ``model`` is modified in place and consumed.

    Args:
        model: a dense Whisper model, on the device and in the dtype calibration should run in.
        clips: calibration audio, 16 kHz mono float arrays (packed to fill the window per ``settings``); an
            iterator is read only as far as ``settings.num_samples`` windows need.
        feature_extractor: the model's feature extractor (log-mel, padded to 30 s like at inference).
        settings: thresholds or budget, calibration scheme.
        plan: ranks chosen earlier (:meth:`RankPlan.load`); skips rank selection.
        processes: the processes of a data-parallel run (:func:`liteasr_hf.parallel.process_group`); each is given
            the same ``clips`` and calibrates on its share of the windows. Default: this process alone.
    """
    settings = settings or CompressionSettings()
    processes = processes or Processes()
    config = model.config
    if plan is not None:
        plan.check(config)
    started = time.perf_counter()
    windows = pack_clips(clips, settings.pack_seconds, limit=settings.num_samples)
    if not windows:
        raise ValueError("No calibration audio: give at least one clip.")
    if len(windows) < processes.world_size:
        raise ValueError(f"{len(windows)} calibration window(s) for {processes.world_size} processes: every process "
                         "needs at least one; raise num_samples (--num-samples) or start fewer processes.")
    mine = [windows[i] for i in processes.shard(len(windows))]
    progress = progress and processes.is_main
    model.eval()
    encoder = model.model.encoder
    # Offloaded (accelerate device_map with "cpu"/"disk" entries): the input layers are loaded for good now,
    # each encoder layer when its turn comes, so the accelerator holds one dense layer at a time.
    for name in ("conv1", "conv2", "embed_positions"):
        make_resident(model, f"model.encoder.{name}")
    # With an accelerate device_map the encoder's first layer decides where inputs go.
    device, dtype = encoder.conv1.weight.device, encoder.conv1.weight.dtype
    layers = range(config.encoder_layers)

    def batches():
        for start in range(0, len(mine), settings.batch_size):
            chunk = mine[start : start + settings.batch_size]
            feats = feature_extractor(chunk, sampling_rate=16000, return_tensors="pt").input_features
            yield feats.to(device=device, dtype=dtype)

    def forward_loop(desc: str) -> Callable[[], None]:
        def loop() -> None:
            with torch.inference_mode():
                # Features are made batch by batch: nothing held grows with the number of windows.
                total = -(-len(mine) // settings.batch_size)
                batch_iter = tqdm(batches(), total=total, desc=desc, leave=False, disable=not progress)
                run_batches(encoder, batch_iter, after_batch=release_freed_memory)
        return loop

    def layer_components(selected: Sequence[int], desc: str) -> dict[tuple[int, str], PrincipalComponents]:
        hooked = {(l, m): mod for l in selected for m, mod in _encoder_linears(model, l, settings.modules).items()}
        named = {f"{l}.{m}": mod for (l, m), mod in hooked.items()}
        stats = collect_output_statistics(named, forward_loop(desc), stop_after=encoder.layers[max(selected)],
                                          stats_device=device)
        if not rows_seen:  # this process's own share, before the sums over all processes
            rows_seen.append(next(iter(stats.values())).count)
        for module_stats in stats.values():
            module_stats.sum_over(processes)
        found, decomposed = principal_components_of({(l, m): stats[f"{l}.{m}"] for (l, m) in hooked}, processes)
        eigendecompositions[0] += decomposed
        return found

    components: dict[tuple[int, str], PrincipalComponents] = {}
    rows_seen: list[int] = []  # output rows (windows x positions) this process calibrated on, first pass
    eigendecompositions = [0]  # how many this process computed (the others' it received)

    # 1. Ranks from the dense model's spectra when they must be known up front (budget, or the paper's
    #    one-shot recipe, whose factors come from the same dense statistics).
    if not settings.sequential or (plan is None and settings.budget is not None):
        # float64 sums and their rounding errors (OutputStatistics): 16 bytes per element.
        shapes = module_shapes(config.d_model, config.encoder_ffn_dim)
        stats_bytes = 16 * sum(shapes[m][1] ** 2 for m in settings.modules) * config.encoder_layers
        groups = [list(layers)] if stats_bytes <= _ONE_PASS_STATS_BYTES else [[l] for l in layers]
        for group in tqdm(groups, desc="Calibrating (dense model)", disable=not progress or len(groups) == 1):
            components.update(layer_components(group, "Calibrating (dense model)"))
        if plan is None:
            weights = None
            if settings.sensitivity_windows and settings.budget is not None:
                chunk = windows[: settings.sensitivity_windows]  # the same on every process: the same plan
                feats = feature_extractor(chunk, sampling_rate=16000, return_tensors="pt").input_features
                weights = module_sensitivities(model, feats.to(device=device, dtype=dtype), components,
                                               settings.rank_multiple, settings.outlier_share)
            plan = _plan(components, config, settings, weights)

    # 2. Factorize layer by layer.
    variance_kept: dict[tuple[int, str], float] = {}
    chosen: list[dict[str, int]] = [dict() for _ in layers]
    for layer in tqdm(layers, desc="Factorizing encoder layers", disable=not progress):
        make_resident(model, f"model.encoder.layers.{layer}")
        if settings.sequential:
            found = layer_components([layer], f"Calibrating layer {layer}")
            this_layer = {m: found[(layer, m)] for m in settings.modules}
        else:
            this_layer = {m: components[(layer, m)] for m in settings.modules}
        for module, pcs in this_layer.items():
            if plan is not None:
                rank = plan.ranks[layer].get(module)
            else:
                rank = _threshold_rank(pcs, config, module, settings)
            if rank is None:
                continue
            path = encoder_module_path(layer, module)
            set_submodule(model, path, factorize_linear(model.get_submodule(path), pcs, rank))
            chosen[layer][module] = rank
            variance_kept[(layer, module)] = pcs.variance_kept(rank)
    if plan is None:
        plan = RankPlan(chosen, [], {"mode": "threshold", "thresholds": settings.thresholds,
                                     "rank_multiple": settings.rank_multiple, "outlier_share": settings.outlier_share})
    plan.variance_kept = [{m: round(variance_kept[(l, m)], 6) for m in chosen[l]} for l in layers]
    plan.method["calibration"] = "sequential" if settings.sequential else "one-shot (paper)"

    lite = _as_lite_whisper(model, plan.ranks)
    placement = getattr(model, "hf_device_map", None)
    if placement and len(set(placement.values())) > 1:
        from accelerate import dispatch_model

        # Same module names as the Whisper model, so its placement applies; what was on disk is kept in
        # CPU memory instead (the weights are in memory already, and the compressed model is smaller).
        placement = {name: "cpu" if where == "disk" else where for name, where in placement.items()}
        if len(set(placement.values())) > 1:
            lite = dispatch_model(lite, device_map=placement)
    report = compression_report(config, plan, settings, windows, time.perf_counter() - started)
    if processes.distributed:
        # Counted from the statistics each process accumulated itself: evidence that each did only its share.
        positions = config.max_source_positions
        shares = processes.gather((rows_seen[0], eigendecompositions[0]))
        report.calibration.processes = processes.world_size
        report.calibration.windows_per_process = [rows // positions for rows, _ in shares]
        report.calibration.eigendecompositions_per_process = [count for _, count in shares]
    return CompressionResult(lite, plan, report)


def make_resident(model: nn.Module, path: str) -> None:
    """Load the module at ``path`` for good if accelerate offloads it (weights on the meta device, streamed
    in from CPU memory or disk on every forward), so that it can be calibrated and factorized.

    Accelerate offloads per block, a module in the device map or, for a map that offloads everything, each
    leaf module: the block holding ``path`` (or every block inside it) is loaded onto the device it executes
    on, and its offloading hook is replaced by one that only moves inputs there. Nothing offloaded: no-op.
    """
    from accelerate.utils import has_offloaded_params

    parts = path.split(".")
    ancestors = (model.get_submodule(".".join(parts[:i])) for i in range(len(parts), -1, -1))
    block = next((b for b in ancestors if has_offloaded_params(b)), None)
    blocks = [block] if block is not None else [m for m in model.get_submodule(path).modules() if has_offloaded_params(m)]
    for block in blocks:
        _load_block(block)


def _load_block(block: nn.Module) -> None:
    from accelerate.hooks import AlignDevicesHook, add_hook_to_module
    from accelerate.utils import align_module_device, set_module_tensor_to_device

    device = block._hf_hook.execution_device
    with align_module_device(block):  # the hook's own loading: from its CPU or disk store to `device`
        tensors = {name: t.detach().clone() for name, t in block.state_dict(keep_vars=True).items()}
    for name, tensor in tensors.items():
        set_module_tensor_to_device(block, name, device, value=tensor)
    add_hook_to_module(block, AlignDevicesHook(execution_device=device))  # replaces the offloading hook


def _threshold_rank(pcs: PrincipalComponents, config, module: str, settings: CompressionSettings) -> int | None:
    threshold = settings.thresholds.get(module, settings.thresholds.get(module_kind(module)))
    if threshold is None:
        return None
    rank = rank_for_threshold(pcs.eigenvalues, threshold, settings.rank_multiple, settings.outlier_share)
    shape = module_shapes(config.d_model, config.encoder_ffn_dim)[module]
    return rank if saves_parameters(*shape, rank) else None


def _plan(components, config, settings: CompressionSettings,
          weights: dict[tuple[int, str], float] | None = None) -> RankPlan:
    spectra = [{m: components[(l, m)].eigenvalues for m in settings.modules} for l in range(config.encoder_layers)]
    if settings.budget is not None:
        return plan_by_budget(spectra, config, settings.budget, settings.budget_measure,
                              settings.rank_multiple, settings.outlier_share, weights=weights,
                              layer_floor=settings.layer_floor)
    return plan_by_threshold(spectra, config, settings.thresholds, settings.rank_multiple, settings.outlier_share)


def _as_lite_whisper(model: WhisperForConditionalGeneration, ranks: list[dict[str, int]]) -> LiteWhisperForConditionalGeneration:
    """Move the (now partly factorized) weights of ``model`` into a LiteWhisper model of the same layout."""
    config = LiteWhisperConfig.from_whisper_config(model.config, ranks)
    with torch.device("meta"):
        lite = LiteWhisperForConditionalGeneration(config)
    state = model.state_dict()
    if any(t.is_meta for t in state.values()):  # offloaded parts (the decoder) are read from their store
        from accelerate.utils.modeling import get_state_dict_offloaded_model

        state = get_state_dict_offloaded_model(model)
    # strict=True: the factorized modules must match the config's layout exactly.
    lite.load_state_dict(state, strict=True, assign=True)
    lite.tie_weights()
    lite.generation_config = model.generation_config
    return lite.eval()


def compression_report(config, plan: RankPlan, settings: CompressionSettings, windows: Sequence[np.ndarray],
                       seconds: float) -> CompressionReport:
    """Per layer and module: rank, variance kept, parameters and FLOPs before and after; and totals."""
    layers = []
    for layer, ranks in enumerate(plan.ranks):
        entry = {}
        for module in LOW_RANK_MODULES:
            rank = ranks.get(module)
            before, after = module_cost(config, module, None), module_cost(config, module, rank)
            entry[module] = ModuleReport(
                rank=rank, variance_kept=plan.variance_kept[layer].get(module) if plan.variance_kept else None,
                params_before=before.params, params_after=after.params, flops_before=before.flops,
                flops_after=after.flops)
        layers.append(entry)
    original, compressed = encoder_cost(config, []), encoder_cost(config, plan.ranks)
    audio_seconds = float(sum(w.size for w in windows)) / 16000
    return CompressionReport(
        encoder=EncoderSize(
            params_before=original.params, params_after=compressed.params,
            params_fraction=round(compressed.params / original.params, 4),
            params_excluding_positions_before=original.params_excluding_positions,
            params_excluding_positions_after=compressed.params_excluding_positions,
            flops_before=original.flops, flops_after=compressed.flops,
            flops_fraction=round(compressed.flops / original.flops, 4),
        ),
        settings=asdict(settings),
        plan_method=plan.method,
        calibration=CalibrationRun(
            windows=len(windows), audio_seconds=round(audio_seconds, 2),
            padding_share=round(1 - audio_seconds / (30 * max(len(windows), 1)), 4),
        ),
        seconds=round(seconds, 1),
        layers=layers,
        low_rank_config=plan.ranks,
    )
