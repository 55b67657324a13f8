"""LiteWhisper model classes on tiny random-weight configs: layout, exactness, save/load, remote code."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSpeechSeq2Seq,
    WhisperConfig,
    WhisperForConditionalGeneration,
)

from liteasr_hf import LiteWhisperConfig, LiteWhisperForConditionalGeneration, LiteWhisperModel, LowRankLinear
from liteasr_hf.checkpoints.saving import save_model_folder
from liteasr_hf.hub.check import BLOCK_LITEASR_HF

TINY = dict(
    d_model=64,
    encoder_layers=2,
    decoder_layers=2,
    encoder_attention_heads=4,
    decoder_attention_heads=4,
    encoder_ffn_dim=128,
    decoder_ffn_dim=128,
    vocab_size=120,
    num_mel_bins=80,
    max_source_positions=1500,
    max_target_positions=48,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
    decoder_start_token_id=3,
    begin_suppress_tokens=None,
)
RANKS = [{"q_proj": 16, "k_proj": 8, "fc1": 32}, {"v_proj": 16, "out_proj": 32, "fc2": 48}]


def features(batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 80, 3000, generator=torch.Generator().manual_seed(seed))


def decoder_ids(batch: int = 2) -> torch.Tensor:
    return torch.tensor([[3, 5, 7, 9]] * batch)


def random_lite(ranks=RANKS, **overrides) -> LiteWhisperForConditionalGeneration:
    torch.manual_seed(0)
    return LiteWhisperForConditionalGeneration(LiteWhisperConfig(low_rank_config=ranks, **{**TINY, **overrides})).eval()


def logits(model, feats=None) -> torch.Tensor:
    with torch.no_grad():
        return model(input_features=features() if feats is None else feats, decoder_input_ids=decoder_ids()).logits


# --- configuration ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ranks, message",
    [
        ([{"q_proj": 16}], "has 1 entries but the encoder has 2 layers"),
        ([{}, {"qkv": 16}], "low_rank_config[1] names unknown module 'qkv'"),
        ([{"fc1": 0}, {}], "low_rank_config[0]['fc1'] = 0: a rank must be a positive integer"),
        ([{}, {"k_proj": 12.5}], "low_rank_config[1]['k_proj'] = 12.5"),
        ([{}, {"k_proj": "8"}], "low_rank_config[1]['k_proj'] = '8'"),
        ([{"fc2": 64}, {}], "low_rank_config[0]['fc2'] = 64: the rank must be smaller than the layer's smaller side (64)"),
        ([{"q_proj": 100}, {}], "smaller side (64)"),
        ("q_proj", "must be a list"),
    ],
)
def test_config_validation_names_layer_module_value(ranks, message):
    with pytest.raises(ValueError) as err:
        LiteWhisperConfig(low_rank_config=ranks, **TINY)
    assert message in str(err.value)


def test_published_config_json_loads_unchanged(tmp_path):
    # The shape of efficient-speech/lite-whisper-* config.json: its own auto_map and architectures.
    published = {
        **TINY,
        "model_type": "lite-whisper",
        "architectures": ["LiteWhisperForConditionalGeneration"],
        "auto_map": {"AutoConfig": "configuration_lite_whisper.LiteWhisperConfig",
                     "AutoModel": "modeling_lite_whisper.LiteWhisperForConditionalGeneration"},
        "low_rank_config": RANKS,
        "torch_dtype": "float32",
        "transformers_version": "4.46.0",
    }
    (tmp_path / "config.json").write_text(json.dumps(published))
    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, LiteWhisperConfig)
    assert config.low_rank_config == RANKS
    assert config.rank(0, "k_proj") == 8 and config.rank(0, "v_proj") is None
    assert set(config.auto_map) == {"AutoConfig", "AutoModel", "AutoModelForSpeechSeq2Seq"}


# --- layout and exactness --------------------------------------------------------------------------------


def test_factorized_layout_is_the_published_one():
    model = random_lite()
    state = model.state_dict()
    prefix = "model.encoder.layers.0."
    assert state[prefix + "self_attn.q_proj.weight1"].shape == (64, 16)
    assert state[prefix + "self_attn.q_proj.weight2"].shape == (16, 64)
    assert state[prefix + "self_attn.k_proj.bias"].shape == (64,)  # a factorized k_proj has a bias
    assert state[prefix + "fc1.weight1"].shape == (64, 32) and state[prefix + "fc1.weight2"].shape == (32, 128)
    assert prefix + "self_attn.v_proj.weight" in state  # absent from the rank table -> dense
    assert prefix + "self_attn.k_proj.weight" not in state
    assert "model.encoder.layers.1.fc2.weight1" in state and "model.encoder.layers.1.fc1.weight" in state
    # Built factorized at construction: no dense weight exists anywhere for a factorized module.
    assert not any(k.endswith("q_proj.weight") for k in state if k.startswith(prefix))


def test_published_layout_state_dict_loads_without_missing_or_unexpected_keys(tmp_path):
    reference = random_lite()
    save_file({k: v.contiguous() for k, v in reference.state_dict().items() if k != "proj_out.weight"},
              str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    reference.config.save_pretrained(tmp_path)
    loaded, info = LiteWhisperForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    torch.testing.assert_close(logits(loaded), logits(reference), rtol=0, atol=0)


def test_low_rank_linear_at_full_rank_equals_dense():
    torch.manual_seed(1)
    dense = torch.nn.Linear(48, 80)
    low = LowRankLinear(48, 80, rank=80)  # weight1 = W^T, weight2 = I
    with torch.no_grad():
        low.weight1.copy_(dense.weight.t())
        low.weight2.copy_(torch.eye(80))
        low.bias.copy_(dense.bias)
    x = torch.randn(3, 7, 48)
    torch.testing.assert_close(low(x), dense(x), rtol=1e-6, atol=1e-6)


def test_exact_low_rank_factors_reproduce_the_dense_model():
    """A Whisper whose encoder weights are exactly rank r is reproduced by LiteWhisper at rank r."""
    torch.manual_seed(2)
    dense = WhisperForConditionalGeneration(WhisperConfig(**TINY)).eval()
    lite = LiteWhisperForConditionalGeneration(
        LiteWhisperConfig.from_whisper_config(dense.config, [{"q_proj": 16, "fc1": 32}, {"fc2": 24}])
    ).eval()
    state = dense.state_dict()
    for layer, module, rank in [(0, "self_attn.q_proj", 16), (0, "fc1", 32), (1, "fc2", 24)]:
        key = f"model.encoder.layers.{layer}.{module}"
        out_f, in_f = state[key + ".weight"].shape
        a, b = torch.randn(in_f, rank) / in_f**0.5, torch.randn(rank, out_f) / rank**0.5
        state[key + ".weight"] = (a @ b).t().contiguous()
        state[key + ".weight1"], state[key + ".weight2"] = a, b
    dense.load_state_dict({k: v for k, v in state.items() if "weight1" not in k and "weight2" not in k})
    lite_state = {k: v for k, v in state.items() if k in lite.state_dict()}
    lite.load_state_dict(lite_state)
    torch.testing.assert_close(logits(lite), logits(dense), rtol=1e-4, atol=1e-4)


def test_empty_rank_table_is_the_whisper_it_came_from(tmp_path):
    torch.manual_seed(3)
    whisper = WhisperForConditionalGeneration(WhisperConfig(**TINY)).eval()
    whisper.save_pretrained(tmp_path / "whisper")
    config = LiteWhisperConfig.from_whisper_config(whisper.config, [])
    lite = LiteWhisperForConditionalGeneration.from_pretrained(tmp_path / "whisper", config=config).eval()
    torch.testing.assert_close(logits(lite), logits(whisper), rtol=0, atol=0)
    with torch.no_grad():
        kwargs = dict(input_features=features(), max_new_tokens=6, num_beams=2, do_sample=False)
        assert torch.equal(lite.generate(**kwargs), whisper.generate(**kwargs))


# --- what Whisper's class does keeps working -------------------------------------------------------------


def test_sdpa_equals_eager_and_encoder_outputs(tmp_path):
    random_lite().save_pretrained(tmp_path)
    sdpa = LiteWhisperForConditionalGeneration.from_pretrained(tmp_path, attn_implementation="sdpa").eval()
    eager = LiteWhisperForConditionalGeneration.from_pretrained(tmp_path, attn_implementation="eager").eval()
    torch.testing.assert_close(logits(sdpa), logits(eager), rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        out = eager.get_encoder()(features(), output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == 3 and out.hidden_states[-1].shape == (2, 1500, 64)
    assert len(out.attentions) == 2 and out.attentions[0].shape == (2, 4, 1500, 1500)
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(2, 4, 1500), rtol=1e-4, atol=1e-4)


def test_generate_beams_batches_and_bf16():
    model = random_lite()
    with torch.no_grad():
        beams = model.generate(input_features=features(3), num_beams=3, max_new_tokens=5, do_sample=False)
        assert beams.shape[0] == 3
        bf16 = model.to(torch.bfloat16)
        out = bf16(input_features=features().to(torch.bfloat16), decoder_input_ids=decoder_ids())
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.logits.float()).all()


def test_device_map_through_accelerate(tmp_path):
    random_lite().save_pretrained(tmp_path)
    expected = logits(random_lite())
    # The low-rank encoder layers offloaded to disk, streamed in on use; the tied decoder embeddings and proj_out
    # stay on the CPU, as transformers 4.57 cannot offload tied weights to disk.
    on_cpu = ["model.encoder.conv1", "model.encoder.conv2", "model.encoder.embed_positions", "model.encoder.layer_norm",
              "model.decoder", "proj_out"]
    model = LiteWhisperForConditionalGeneration.from_pretrained(
        tmp_path, device_map={"model.encoder.layers": "disk", **dict.fromkeys(on_cpu, "cpu")},
        offload_folder=tmp_path / "offload"
    ).eval()
    torch.testing.assert_close(logits(model), expected, rtol=0, atol=0)
    # A memory cap below the model's size: accelerate places the modules and offloads the decoder's layers to disk.
    model = LiteWhisperForConditionalGeneration.from_pretrained(
        tmp_path, device_map="auto", max_memory={"cpu": 1_000_000}, offload_folder=tmp_path / "offload_auto"
    ).eval()
    assert "disk" in set(model.hf_device_map.values())
    torch.testing.assert_close(logits(model), expected, rtol=0, atol=0)


def test_torch_compile_of_the_encoder():
    model = random_lite()
    encoder = model.get_encoder()
    with torch.no_grad():
        expected = encoder(features(1)).last_hidden_state
        compiled = torch.compile(encoder)
        got = compiled(features(1)).last_hidden_state
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


# --- save / load, Auto classes, remote code --------------------------------------------------------------


def test_auto_classes_load_a_saved_folder_in_process(tmp_path):
    model = random_lite()
    model.save_pretrained(tmp_path)
    assert isinstance(AutoModelForSpeechSeq2Seq.from_pretrained(tmp_path), LiteWhisperForConditionalGeneration)
    assert isinstance(AutoModel.from_pretrained(tmp_path), LiteWhisperForConditionalGeneration)  # it generates
    bare = LiteWhisperModel.from_pretrained(tmp_path)  # the bare encoder-decoder stays importable by name
    assert isinstance(bare, LiteWhisperModel) and not hasattr(bare, "generate")
    saved = load_file(str(tmp_path / "model.safetensors"))
    for key, value in model.state_dict().items():
        if key in saved:
            assert torch.equal(saved[key], value), key


REMOTE_LOAD = BLOCK_LITEASR_HF + textwrap.dedent(
    """
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoModel, AutoModelForSpeechSeq2Seq
    path, inputs, out = sys.argv[1:4]
    feats = load_file(inputs)["features"]
    ids = torch.tensor([[3, 5, 7, 9]] * feats.shape[0])
    s2s = AutoModelForSpeechSeq2Seq.from_pretrained(path, trust_remote_code=True).eval()
    auto = AutoModel.from_pretrained(path, trust_remote_code=True).eval()
    # The published lite-whisper model cards' usage: AutoModel, then generate.
    assert type(s2s).__name__ == type(auto).__name__ == "LiteWhisperForConditionalGeneration", (type(s2s), type(auto))
    with torch.no_grad():
        logits = s2s(input_features=feats, decoder_input_ids=ids).logits
        tokens = s2s.generate(feats, max_new_tokens=8, do_sample=False)
        auto_tokens = auto.generate(feats, max_new_tokens=8, do_sample=False)
    assert not any(m.startswith("liteasr_hf") for m in sys.modules)
    save_file({"logits": logits, "tokens": tokens, "auto_tokens": auto_tokens}, out)
    """
)


def test_saved_folder_loads_with_remote_code_without_the_package(tmp_path):
    model = random_lite()
    folder = save_model_folder(model, tmp_path / "lite")
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_lite_whisper.LiteWhisperConfig",
        "AutoModel": "modeling_lite_whisper.LiteWhisperForConditionalGeneration",
        "AutoModelForSpeechSeq2Seq": "modeling_lite_whisper.LiteWhisperForConditionalGeneration",
    }
    for name in ("configuration_lite_whisper.py", "modeling_lite_whisper.py", "pipeline_lite_whisper.py"):
        assert (folder / name).is_file(), name
    assert json.loads((folder / "generation_config.json").read_text())["max_length"] == TINY["max_target_positions"]

    feats = features()
    save_file({"features": feats}, tmp_path / "feats.safetensors")
    script = tmp_path / "load.py"
    script.write_text(REMOTE_LOAD)
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HF_HOME": str(tmp_path / "hf_home")}
    result = subprocess.run(
        [sys.executable, str(script), str(folder), str(tmp_path / "feats.safetensors"), str(tmp_path / "out.st")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = load_file(str(tmp_path / "out.st"))
    torch.testing.assert_close(out["logits"], logits(model, feats), rtol=0, atol=0)
    assert torch.equal(out["auto_tokens"], out["tokens"])
    with torch.no_grad():
        assert torch.equal(out["tokens"], model.generate(feats, max_new_tokens=8, do_sample=False))


# --- bad input ---------------------------------------------------------------------------------------------


def test_checkpoint_that_disagrees_with_its_config_is_an_error(tmp_path):
    random_lite().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["low_rank_config"] = [{"q_proj": 8, "k_proj": 8, "fc1": 32}, {"v_proj": 16, "fc2": 48}]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError) as err:
        LiteWhisperForConditionalGeneration.from_pretrained(tmp_path)
    message = str(err.value)
    assert str(tmp_path) in message
    # transformers 4.x reports no shapes with a mismatched key
    shapes = "" if transformers.__version__.startswith("4.") else ": checkpoint (64, 16) vs config (64, 8)"
    assert "shape mismatch at encoder layer 0, module q_proj (weight1)" + shapes in message
    assert "in the checkpoint but not in the model: encoder layer 1, module out_proj (weight1)" in message
    assert "missing from the checkpoint: encoder layer 1, module out_proj (weight)" in message


def test_missing_weights_file_is_an_error_naming_the_folder(tmp_path):
    random_lite().save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(OSError) as err:
        LiteWhisperForConditionalGeneration.from_pretrained(tmp_path)
    assert str(tmp_path) in str(err.value) and "model.safetensors" in str(err.value)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_weights_file_is_named_with_the_fix(tmp_path, damage):
    random_lite().save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"not safetensors" * 8)
    for load in (LiteWhisperForConditionalGeneration.from_pretrained, AutoModelForSpeechSeq2Seq.from_pretrained):
        with pytest.raises(OSError, match=rf"The weights of {tmp_path} are truncated or corrupt .*Download or copy"):
            load(tmp_path)
