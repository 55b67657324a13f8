"""Calibration statistics, PCA, rank selection and factorization, on small random data and models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_modeling import TINY, features
from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

from liteasr_hf.compression.calibration import OutputStatistics, collect_output_statistics, run_batches
from liteasr_hf.compression.compressor import CompressionSettings, compress
from liteasr_hf.compression.cost import encoder_cost, module_cost
from liteasr_hf.compression.factorization import encoder_module_path, factorize_linear, set_submodule
from liteasr_hf.compression.pca import principal_components
from liteasr_hf.compression.rank_selection import (
    RankPlan,
    check_budget_reachable,
    outlier_directions,
    plan_by_budget,
    plan_by_threshold,
    rank_for_threshold,
    saves_parameters,
)
from liteasr_hf.data.windows import pack_clips
from liteasr_hf.models.lite_whisper.configuration_lite_whisper import module_shapes


def test_streamed_statistics_equal_the_stacked_mean_and_covariance():
    torch.manual_seed(0)
    layer = torch.nn.Linear(12, 10)
    batches = [torch.randn(3, 7, 12) for _ in range(4)]
    stats = collect_output_statistics({"layer": layer}, lambda: [layer(b) for b in batches])["layer"]
    outputs = torch.cat([layer(b).reshape(-1, 10) for b in batches]).detach().double()
    assert stats.count == 84
    torch.testing.assert_close(stats.mean, outputs.mean(0))
    torch.testing.assert_close(stats.covariance(), torch.cov(outputs.t(), correction=0))
    assert stats.outer.dtype == torch.float64


def test_hooks_are_removed_after_success_and_error():
    layer = torch.nn.Linear(4, 4)
    collect_output_statistics({"l": layer}, lambda: layer(torch.randn(2, 4)))
    assert not layer._forward_hooks

    def failing_loop():
        layer(torch.randn(2, 4))
        raise RuntimeError("data loader died")

    with pytest.raises(RuntimeError, match="data loader died"):
        collect_output_statistics({"l": layer}, failing_loop)
    assert not layer._forward_hooks


def test_statistics_memory_does_not_grow_with_samples():
    layer = torch.nn.Linear(16, 32)
    small = collect_output_statistics({"l": layer}, lambda: [layer(torch.randn(5, 16)) for _ in range(2)])["l"]
    large = collect_output_statistics({"l": layer}, lambda: [layer(torch.randn(5, 16)) for _ in range(20)])["l"]
    size = lambda s: s.total.numel() + s.outer.numel()  # noqa: E731
    assert large.count == 10 * small.count and size(large) == size(small) == 32 + 32 * 32


def test_stop_after_cuts_the_forward_pass_short():
    first, second = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
    calls = []
    second.register_forward_hook(lambda *a: calls.append(1))
    model = torch.nn.Sequential(first, second)
    stats = collect_output_statistics({"first": first}, lambda: run_batches(model, [torch.randn(2, 4)] * 3),
                                      stop_after=first)
    assert stats["first"].count == 6 and not calls and len(second._forward_hooks) == 1


def test_statistics_in_chunks_equal_one_pass_and_match_numpy():
    y = torch.randn(3, 37, 10, generator=torch.Generator().manual_seed(3)) * 5 + 2
    whole, chunked = OutputStatistics.empty(10), OutputStatistics.empty(10)
    whole.add(y, chunk_elements=10**9)
    chunked.add(y, chunk_elements=70)  # 7 rows at a time, the last chunk shorter
    assert whole.count == chunked.count == 111
    torch.testing.assert_close(chunked.outer, whole.outer, rtol=1e-12, atol=1e-9)
    expected = np.cov(y.reshape(-1, 10).double().numpy(), rowvar=False, bias=True)
    np.testing.assert_allclose(chunked.covariance().numpy(), expected, rtol=1e-10, atol=1e-10)


def test_factorization_at_full_rank_is_exact_and_low_rank_outputs_are_reproduced():
    torch.manual_seed(1)
    dense = torch.nn.Linear(24, 16)
    x = torch.randn(200, 24)
    stats = OutputStatistics.empty(16)
    stats.add(dense(x))
    full = factorize_linear(dense, principal_components(stats), 16)
    torch.testing.assert_close(full(x), dense(x), rtol=1e-5, atol=1e-5)

    # Outputs confined to an affine 4-dimensional subspace are reproduced exactly at rank 4.
    low = torch.nn.Linear(24, 16)
    with torch.no_grad():
        low.weight.copy_(torch.randn(16, 4) @ torch.randn(4, 24))
    stats = OutputStatistics.empty(16)
    stats.add(low(x))
    factorized = factorize_linear(low, principal_components(stats), 4)
    assert factorized.weight1.shape == (24, 4) and factorized.weight2.shape == (4, 16)
    probe = torch.randn(50, 24)
    torch.testing.assert_close(factorized(probe), low(probe), rtol=1e-4, atol=1e-4)


def test_threshold_rank_is_the_smallest_multiple_keeping_more_than_the_share():
    eigenvalues = torch.tensor([50.0, 30.0, 10.0, 5.0, 3.0, 1.0, 0.5, 0.5], dtype=torch.float64)
    assert rank_for_threshold(eigenvalues, 0.80, multiple=1) == 3  # 0.8 exactly is not *more than* 0.8
    assert rank_for_threshold(eigenvalues, 0.79, multiple=1) == 2
    assert rank_for_threshold(eigenvalues, 0.81, multiple=1) == 3
    assert rank_for_threshold(eigenvalues, 0.81, multiple=4) == 4
    assert rank_for_threshold(eigenvalues, 1.0, multiple=1) == 8
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        rank_for_threshold(eigenvalues, 1.5)


def test_outlier_direction_does_not_swallow_the_threshold():
    # One direction with 99% of the variance, the rest spread evenly (Whisper's last fc2).
    eigenvalues = torch.cat([torch.tensor([9900.0]), torch.full((99,), 1.0)]).double()
    assert rank_for_threshold(eigenvalues, 0.99, multiple=1) == 1  # the paper's share: one direction
    assert outlier_directions(eigenvalues, 0.5) == 1
    assert rank_for_threshold(eigenvalues, 0.99, multiple=1, outlier_share=0.5) == 1 + 99
    assert rank_for_threshold(eigenvalues, 0.5, multiple=1, outlier_share=0.5) == 1 + 50


def spectra_for(config, decay: float):
    out = {"q_proj": 64, "k_proj": 64, "v_proj": 64, "out_proj": 64, "fc1": 128, "fc2": 64}
    return [{m: torch.tensor([decay**i for i in range(w)], dtype=torch.float64) for m, w in out.items()}
            for _ in range(config.encoder_layers)]


def test_budget_plan_meets_its_target_and_reports_impossible_budgets(tmp_path):
    config = WhisperConfig(**TINY)
    spectra = spectra_for(config, 0.9)
    plan = plan_by_budget(spectra, config, target=0.85, measure="params", multiple=16)
    fraction = encoder_cost(config, plan.ranks).params / encoder_cost(config, []).params
    assert fraction <= 0.85
    # Greedy: removing any one more block would not be needed, so it stops near the target.
    assert fraction > 0.75
    with pytest.raises(ValueError, match="cannot be met"):
        plan_by_budget(spectra, config, target=0.2)

    path = plan.save(tmp_path / "plan.json")
    again = RankPlan.load(path, config)
    assert again.ranks == plan.ranks and again.method["mode"] == "budget"
    (tmp_path / "bad.json").write_text(json.dumps({"ranks": [{"fc1": 500}, {}]}))
    with pytest.raises(ValueError, match=r"low_rank_config\[0\]\['fc1'\] = 500"):
        RankPlan.load(tmp_path / "bad.json", config)


def test_threshold_plan_keeps_dense_where_nothing_is_saved():
    config = WhisperConfig(**TINY)
    plan = plan_by_threshold(spectra_for(config, 0.5), config, {"attention": 0.99, "mlp": 0.999}, multiple=16)
    assert plan.ranks[0]["q_proj"] == 16 and plan.ranks[0]["fc1"] == 16
    flat = plan_by_threshold(spectra_for(config, 1.0), config, {"attention": 0.99}, multiple=16)
    assert flat.ranks == [{}, {}]  # a flat spectrum needs every direction: dense is smaller


def test_pack_clips_fills_windows_without_exceeding_them():
    clips = [np.ones(16000 * s, dtype=np.float32) for s in (5, 5, 5, 12, 20, 3)]
    packed = pack_clips(clips, max_seconds=28, gap_seconds=0.5)
    assert all(p.size <= 28 * 16000 for p in packed)
    assert sum(int((p != 0).sum()) for p in packed) == sum(c.size for c in clips)
    assert len(packed) == 3


def test_pack_clips_reads_no_clip_beyond_the_windows_it_keeps():
    read = []

    def clips():  # 5, 5, 5 s fill one 28 s window; 12 s starts the next, and closes the first
        for i, seconds in enumerate((5, 5, 5, 12, 20, 3)):
            read.append(i)
            yield np.full(16000 * seconds, i + 1, dtype=np.float32)

    first = pack_clips(clips(), max_seconds=28, gap_seconds=0.5, limit=1)
    assert read == [0, 1, 2, 3] and len(first) == 1
    everything = [np.full(16000 * s, i + 1, dtype=np.float32) for i, s in enumerate((5, 5, 5, 12, 20, 3))]
    for limit in (1, 2, 3, 4):
        windows = pack_clips(iter(everything), max_seconds=28, gap_seconds=0.5, limit=limit)
        expected = pack_clips(everything, 28, gap_seconds=0.5)[:limit]
        assert [w.tolist() for w in windows] == [w.tolist() for w in expected]
    with pytest.raises(ValueError, match="limit must be at least 1 window, got 0"):
        pack_clips(everything, 28, limit=0)


def test_compress_a_random_whisper_end_to_end_with_both_schemes():
    config = WhisperConfig(**TINY)
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal(16000 * 8).astype(np.float32) * 0.1 for _ in range(6)]
    extractor = WhisperFeatureExtractor()
    thresholds = {"attention": 0.5, "mlp": 0.5}  # random weights have flat spectra: low shares force factorization
    for sequential in (True, False):
        torch.manual_seed(0)
        model = WhisperForConditionalGeneration(config).eval()
        settings = CompressionSettings(thresholds=thresholds, sequential=sequential, num_samples=2, batch_size=1)
        result = compress(model, clips, extractor, settings, progress=False)
        assert any(result.plan.ranks), result.plan.ranks
        assert result.model.config.low_rank_config == result.plan.ranks
        with torch.no_grad():
            out = result.model.get_encoder()(features(1)).last_hidden_state
        assert torch.isfinite(out).all()
        assert result.report.encoder.params_after < result.report.encoder.params_before
        assert result.report.plan_method["calibration"] == ("sequential" if sequential else "one-shot (paper)")
    # The plan is re-applied exactly.
    torch.manual_seed(0)
    again = compress(WhisperForConditionalGeneration(config).eval(), clips, extractor,
                     CompressionSettings(num_samples=2), plan=result.plan, progress=False)
    assert again.plan.ranks == result.plan.ranks


def test_placed_and_offloaded_models_are_calibrated_where_they_live(tmp_path):
    config = WhisperConfig(**TINY)
    torch.manual_seed(0)
    WhisperForConditionalGeneration(config).save_pretrained(tmp_path / "dense")
    clips = [np.random.default_rng(1).standard_normal(16000 * 8).astype(np.float32) * 0.1]
    settings = CompressionSettings(thresholds={"attention": 0.5, "mlp": 0.5}, num_samples=1, batch_size=1)
    placed = WhisperForConditionalGeneration.from_pretrained(tmp_path / "dense", device_map={"": "cpu"})
    result = compress(placed, clips, WhisperFeatureExtractor(), settings, progress=False)
    assert any(result.plan.ranks)
    # Offloaded to disk: each encoder layer is loaded when its turn comes; the result is the same.
    offloaded = WhisperForConditionalGeneration.from_pretrained(
        tmp_path / "dense", device_map="auto", max_memory={"cpu": 200_000}, offload_folder=tmp_path / "offload")
    assert "disk" in offloaded.hf_device_map.values()
    again = compress(offloaded, clips, WhisperFeatureExtractor(), settings, progress=False)
    assert again.plan.ranks == result.plan.ranks
    expected = result.model.state_dict()
    for key, tensor in again.model.state_dict().items():
        torch.testing.assert_close(tensor, expected[key], rtol=0, atol=0, msg=key)


def test_a_budget_no_plan_can_meet_is_refused_from_the_shapes_alone():
    config = WhisperConfig(**TINY)
    shapes = module_shapes(config.d_model, config.encoder_ffn_dim)
    floor = [{m: 16 for m in shapes if saves_parameters(*shapes[m], 16)} for _ in range(config.encoder_layers)]
    smallest = encoder_cost(config, floor).params / encoder_cost(config, []).params
    with pytest.raises(ValueError, match=rf"cannot be met: .* keeps {smallest:.1%}\. Raise the budget"):
        check_budget_reachable(config, smallest - 1e-3)
    # Just above the floor: allowed, and a plan without outlier directions reaches it.
    check_budget_reachable(config, smallest + 1e-3)
    plan = plan_by_budget(spectra_for(config, 0.9), config, target=smallest + 1e-3, multiple=16)
    assert encoder_cost(config, plan.ranks).params <= (smallest + 1e-3) * encoder_cost(config, []).params


def test_budget_weights_move_the_cuts_away_from_sensitive_modules():
    config = WhisperConfig(**TINY)
    spectra = spectra_for(config, 0.9)
    plain = plan_by_budget(spectra, config, target=0.85, multiple=16)
    cut = [(layer, module) for layer, ranks in enumerate(plain.ranks) for module in ranks]
    assert cut
    # The modules the plain allocation cut become 100x more sensitive: the weighted one cuts elsewhere first.
    weights = {key: 100.0 for key in cut}
    weighted = plan_by_budget(spectra, config, target=0.85, multiple=16, weights=weights)
    assert encoder_cost(config, weighted.ranks).params <= 0.85 * encoder_cost(config, []).params
    kept_rank = sum(plain.ranks[l].get(m, 0) for l, m in cut) < sum(
        weighted.ranks[l].get(m, 10**6) for l, m in cut)
    assert kept_rank, (plain.ranks, weighted.ranks)
    assert weighted.method["sensitivity"] and "sensitivity" not in plain.method


def test_a_layer_floor_spreads_the_cut_and_is_checked():
    config = WhisperConfig(**TINY)
    shapes = module_shapes(config.d_model, config.encoder_ffn_dim)
    # Layer 0's outputs look nearly one-dimensional on this "calibration": the plain allocation cuts it deepest.
    spectra = [{m: torch.tensor([decay**i for i in range(min(shapes[m]))], dtype=torch.float64) for m in shapes}
               for decay in (0.5, 0.97)]

    def layer_share(plan, layer):
        return (sum(module_cost(config, m, plan.ranks[layer].get(m)).params for m in shapes)
                / sum(module_cost(config, m, None).params for m in shapes))

    plain = plan_by_budget(spectra, config, target=0.86, multiple=16)
    floored = plan_by_budget(spectra, config, target=0.86, multiple=16, layer_floor=0.5)
    assert layer_share(plain, 0) < 0.5 <= layer_share(floored, 0)
    assert layer_share(floored, 1) < layer_share(plain, 1)  # the rest of the cut moved to layer 1
    assert encoder_cost(config, floored.ranks).params <= 0.86 * encoder_cost(config, []).params
    assert floored.method["layer_floor"] == 0.5 and "layer_floor" not in plain.method
    with pytest.raises(ValueError, match="cannot be met with every layer keeping 60% of its own"):
        plan_by_budget(spectra, config, target=0.86, multiple=16, layer_floor=0.6)
    with pytest.raises(ValueError, match="layer_floor = 0.9 is above the budget"):
        CompressionSettings(budget=0.8, layer_floor=0.9)
    with pytest.raises(ValueError, match="give a budget too"):
        CompressionSettings(layer_floor=0.5)


def test_module_sensitivities_leave_the_model_unchanged_and_are_centred():
    from liteasr_hf.compression.sensitivity import module_sensitivities, probe_rank

    config = WhisperConfig(**TINY)
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config).eval()
    feats = features(2)
    encoder = model.get_encoder()
    with torch.no_grad():
        before = encoder(feats).last_hidden_state
    stats = {}
    for layer in range(config.encoder_layers):
        block = encoder.layers[layer]
        named = {f"{layer}.{m}": (block.self_attn if m.endswith("proj") else block).get_submodule(m)
                 for m in ("q_proj", "fc1")}
        stats.update(collect_output_statistics(named, lambda: run_batches(encoder, [feats])))
    components = {(int(k.split(".")[0]), k.split(".")[1]): principal_components(s) for k, s in stats.items()}
    # Random weights have flat spectra: a low share makes the probe cuts save something.
    weights = module_sensitivities(model, feats, components, multiple=16, outlier_share=0.5, kept=0.5)
    with torch.no_grad():
        after = encoder(feats).last_hidden_state
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    assert set(weights) <= set(components) and weights
    assert all(w > 0 for w in weights.values())
    assert abs(sum(np.log(list(weights.values())))) < 1e-6  # geometric mean 1
    rank, lost = probe_rank(components[(0, "fc1")].eigenvalues, 16, 0.5, kept=0.5)
    assert rank % 16 == 0 and 0 < lost <= 0.5
    # The probe runs each cut from its own layer on; the whole encoder, cut the same way, gives the same weights.
    scale = float((before - before.mean(dim=(0, 1))).pow(2).mean())
    raw = {}
    for (layer, module) in weights:
        rank, lost = probe_rank(components[(layer, module)].eigenvalues, 16, 0.5, kept=0.5)
        path = encoder_module_path(layer, module)
        dense = model.get_submodule(path)
        set_submodule(model, path, factorize_linear(dense, components[(layer, module)], rank))
        with torch.no_grad():
            out = encoder(feats).last_hidden_state
        set_submodule(model, path, dense)
        raw[(layer, module)] = float((out - before).pow(2).mean()) / scale / lost
    centre = np.exp(np.mean(np.log(list(raw.values()))))
    for key, value in raw.items():
        assert weights[key] == pytest.approx(value / centre, rel=1e-4), key
