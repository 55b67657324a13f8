"""Rank-space self-attention: exact against the full path, chosen by the cost model, overridable, visible."""

from __future__ import annotations

import pytest
import torch
import transformers
from transformers import WhisperConfig

from liteasr_hf import LiteWhisperConfig, LiteWhisperForConditionalGeneration
from liteasr_hf.checkpoints.saving import save_model_folder
from liteasr_hf.compression.cost import encoder_cost
from liteasr_hf.models.lite_whisper.modeling_lite_whisper import attention_flops

# head_dim 16: ranks below it make rank space cheaper, ranks above it do not.
SMALL = dict(
    d_model=64, encoder_layers=3, decoder_layers=1, encoder_attention_heads=4, decoder_attention_heads=4,
    encoder_ffn_dim=128, decoder_ffn_dim=128, vocab_size=120, num_mel_bins=80, max_source_positions=60,
    max_target_positions=32, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=3,
    begin_suppress_tokens=None,
)
RANKS = [
    {"q_proj": 8, "k_proj": 8, "v_proj": 8},  # everything below the head size
    {"k_proj": 8, "v_proj": 12, "fc1": 32},  # dense query, k and v of different ranks
    {"q_proj": 32, "k_proj": 24, "v_proj": 40},  # ranks above the head size
]


def model_with(path="auto", ranks=RANKS, attn="sdpa", seed=0) -> LiteWhisperForConditionalGeneration:
    torch.manual_seed(seed)
    config = LiteWhisperConfig(low_rank_config=ranks, attention_path=path, **SMALL)
    model = LiteWhisperForConditionalGeneration(config).eval()
    with torch.no_grad():
        for p in model.parameters():  # larger than the default init, so that attention is far from uniform
            p.normal_(0.0, 0.3)
    model.set_attn_implementation(attn)
    return model


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def padding_mask(batch: int, tokens: int, lengths: list[int], boolean: bool) -> torch.Tensor:
    """(B, 1, T, T) mask hiding keys past each item's length: bool (True attends) or additive float."""
    keep = torch.arange(tokens)[None, :] < torch.tensor(lengths)[:, None]  # (B, T)
    keep = keep[:, None, None, :].expand(batch, 1, tokens, tokens)
    return keep if boolean else torch.zeros(keep.shape).masked_fill(~keep, torch.finfo(torch.float32).min)


def test_auto_picks_rank_space_only_below_head_size_and_shows_it():
    model = model_with()
    encoder = model.get_encoder()
    assert encoder.attention_paths() == ["rank_space", "rank_space", "full"]
    assert "path=rank_space (attention_path='auto')" in repr(encoder.layers[0].self_attn)
    assert "path=full (attention_path='auto')" in repr(encoder.layers[2].self_attn)
    # the rule found by measuring: rank space pays only up to the head size (at it, k's up-projection is saved)
    for rank, cheaper in ((8, True), (16, True), (20, False), (24, False)):
        costs = attention_flops(64, 4, 60, rank, rank, rank)
        assert (costs["rank_space"] < costs["full"]) is cheaper, rank
    # padding to one head size: the larger of k and v rank counts for both without the fused kernel
    padded = attention_flops(512, 8, 1500, 32, 16, 48, one_head_size=True)["rank_space"]
    unpadded = attention_flops(512, 8, 1500, 32, 16, 48, one_head_size=False)["rank_space"]
    assert padded > unpadded
    assert attention_flops(64, 4, 60, None, None, 8)["rank_space"] is None


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_rank_space_equals_full_path_on_the_encoder(attn):
    features = torch.randn(3, 80, 120, generator=torch.Generator().manual_seed(1))
    outputs = {}
    for path in ("full", "rank_space"):
        model = model_with(path, attn=attn)
        assert model.get_encoder().attention_paths() == [path] * 3
        with torch.no_grad():
            outputs[path] = model.get_encoder()(features).last_hidden_state
    assert relative_error(outputs["rank_space"], outputs["full"]) < 1e-5


# transformers gives eager attention additive masks and SDPA boolean or additive ones
@pytest.mark.parametrize("attn,boolean", [("eager", False), ("sdpa", False), ("sdpa", True)])
def test_rank_space_equals_full_path_with_padding_and_batches(attn, boolean):
    hidden = torch.randn(3, 60, 64, generator=torch.Generator().manual_seed(2))
    mask = padding_mask(3, 60, [60, 41, 7], boolean)
    for layer in range(3):
        results = {}
        for path in ("full", "rank_space"):
            attention = model_with(path, attn=attn).get_encoder().layers[layer].self_attn
            with torch.no_grad():
                results[path] = attention(hidden, attention_mask=mask)[0]
        assert relative_error(results["rank_space"], results["full"]) < 1e-5, layer
        # padded keys really are ignored: changing them leaves every output row unchanged
        changed = hidden.clone()
        changed[2, 7:] = torch.randn(53, 64)
        with torch.no_grad():
            again = attention(changed, attention_mask=mask)[0]
        assert torch.allclose(again[2, :7], results["rank_space"][2, :7], atol=1e-5)


def test_attention_weights_are_the_same_on_both_paths():
    hidden = torch.randn(2, 60, 64, generator=torch.Generator().manual_seed(3))
    weights = {}
    for path in ("full", "rank_space"):
        attention = model_with(path, attn="eager").get_encoder().layers[0].self_attn
        with torch.no_grad():
            _, weights[path] = attention(hidden, output_attentions=True)
    assert weights["full"].shape == weights["rank_space"].shape == (2, 4, 60, 60)
    assert relative_error(weights["rank_space"], weights["full"]) < 1e-5


def test_generation_is_identical_on_both_paths():
    features = torch.randn(2, 80, 120, generator=torch.Generator().manual_seed(4))
    tokens = {}
    for path in ("full", "rank_space"):
        with torch.no_grad():
            tokens[path] = model_with(path).generate(features, max_new_tokens=8, do_sample=False, num_beams=1)
    assert torch.equal(tokens["full"], tokens["rank_space"])


@pytest.mark.skipif(not transformers.__version__.startswith("4."), reason="head_mask exists in transformers 4.x only")
def test_head_mask_is_applied_on_a_rank_space_layer():
    features = torch.randn(1, 80, 120, generator=torch.Generator().manual_seed(7))
    head_mask = torch.tensor([[1.0, 0.0, 1.0, 1.0]] * 3)  # (layers, heads): head 1 off
    outputs = {}
    for path, mask in (("full", head_mask), ("rank_space", head_mask), ("rank_space", None)):
        with torch.no_grad():
            encoder = model_with(path, attn="eager").get_encoder()
            outputs[path, mask is None] = encoder(features, head_mask=mask).last_hidden_state
    assert relative_error(outputs["rank_space", False], outputs["full", False]) < 1e-5
    assert relative_error(outputs["rank_space", True], outputs["rank_space", False]) > 1e-2


def test_folded_weights_follow_weight_changes_and_gradients_reach_the_factors():
    model = model_with("rank_space")
    attention = model.get_encoder().layers[0].self_attn
    hidden = torch.randn(1, 60, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        before = attention(hidden)[0]
        attention.k_proj.weight2.mul_(0.5)  # in place: the cached fold must notice
        after = attention(hidden)[0]
    model.config.attention_path = "full"
    with torch.no_grad():
        reference = attention(hidden)[0]
    assert not torch.allclose(before, after)
    assert relative_error(after, reference) < 1e-5

    model.config.attention_path = "rank_space"
    model.train()
    attention(hidden)[0].square().sum().backward()
    for module in (attention.q_proj, attention.k_proj, attention.v_proj):
        for name in ("weight1", "weight2"):
            grad = getattr(module, name).grad
            assert grad is not None and grad.abs().sum() > 0, (module, name)


def test_a_model_made_under_inference_mode_runs_in_rank_space():
    """Parameters created or moved under torch.inference_mode have no version counter; the fold cache copes."""
    features = torch.randn(2, 80, 120, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        reference = model_with("full").get_encoder()(features).last_hidden_state
    with torch.inference_mode():
        model = model_with("rank_space").to(torch.float64).to(torch.float32)
        assert all(p.is_inference() for p in model.parameters())
        first = model.get_encoder()(features).last_hidden_state
        second = model.get_encoder()(features).last_hidden_state  # from the cached fold
    assert relative_error(first, reference) < 1e-5
    assert torch.equal(first, second)


def test_attention_path_round_trips_and_is_validated(tmp_path):
    paths = ["rank_space", "auto", "full"]
    model = model_with(paths)
    save_model_folder(model, tmp_path / "m")
    loaded = LiteWhisperForConditionalGeneration.from_pretrained(tmp_path / "m")
    assert loaded.config.attention_path == paths
    assert loaded.get_encoder().attention_paths() == ["rank_space", "rank_space", "full"]

    with pytest.raises(ValueError, match=r"attention_path\[1\] = 'fast'"):
        LiteWhisperConfig(low_rank_config=RANKS, attention_path=["full", "fast", "auto"], **SMALL)
    with pytest.raises(ValueError, match="3 layers"):
        LiteWhisperConfig(low_rank_config=RANKS, attention_path=["full"], **SMALL)
    with pytest.raises(ValueError, match="encoder layer 0 has dense k_proj and v_proj"):
        LiteWhisperConfig(low_rank_config=[{"q_proj": 8}, {}, {}], attention_path="rank_space", **SMALL)


def test_encoder_flops_follow_the_path_taken():
    config = LiteWhisperConfig(low_rank_config=RANKS, **SMALL)
    dense = encoder_cost(WhisperConfig(**SMALL))
    assert encoder_cost(config, []) == dense
    auto = encoder_cost(config)
    config.attention_path = "full"
    full = encoder_cost(config)
    assert auto.params == full.params and auto.flops < full.flops < dense.flops
    costs = [attention_flops(64, 4, 60, *(RANKS[i].get(m) for m in ("q_proj", "k_proj", "v_proj"))) for i in (0, 1)]
    assert full.flops - auto.flops == sum(c["full"] - c["rank_space"] for c in costs)


def test_rank_space_encoder_compiles_without_graph_breaks():
    encoder = model_with("rank_space").get_encoder()
    features = torch.randn(1, 80, 120, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        expected = encoder(features).last_hidden_state
        assert torch._dynamo.explain(encoder)(features).graph_break_count == 0
        got = torch.compile(encoder)(features).last_hidden_state
    assert relative_error(got, expected) < 1e-5
