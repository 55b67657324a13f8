"""Healing (distillation of the factors against the dense encoder) on a small random Whisper: what trains, what
stays, early stopping on held-out windows, and the errors for bad input and a diverging learning rate."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from test_modeling import TINY
from torch import nn
from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

from liteasr_hf.compression.compressor import CompressionSettings, compress
from liteasr_hf.compression.healing import (HealingDiverged, HealSettings, _cosine, _normalised_mse,
                                            describe_healing, encoder_embeddings, heal, healing_parameters,
                                            healing_windows, position_weights)
from liteasr_hf.compression.report import CompressionReport
from liteasr_hf.data.speech import SHIPPED_SPEECH_SET, SpeechSource
from liteasr_hf.data.windows import cut_pieces


@pytest.fixture(scope="module")
def pair():
    """(dense teacher, its compression at low variance shares) of a small random Whisper, and noise clips."""
    torch.manual_seed(0)
    teacher = WhisperForConditionalGeneration(WhisperConfig(**TINY)).eval()
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal(16000 * 20).astype(np.float32) * 0.1 for _ in range(10)]  # one window each
    settings = CompressionSettings(thresholds={"attention": 0.5, "mlp": 0.5}, num_samples=10, batch_size=2)
    student = compress(copy.deepcopy(teacher), clips, WhisperFeatureExtractor(), settings, progress=False).model
    assert any(student.config.low_rank_config)
    return teacher, student, clips


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_encoder_embeddings_are_the_first_layers_input_and_leave_no_hook(pair):
    teacher, _, clips = pair
    encoder = teacher.get_encoder()
    features = WhisperFeatureExtractor()(clips[:2], sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        expected = encoder(features, output_hidden_states=True).hidden_states[0]
        got = encoder_embeddings(encoder, features)
    assert torch.equal(got, expected)
    assert not encoder.layers[0]._forward_pre_hooks


def test_heal_trains_only_the_factors_and_lowers_the_held_out_loss(pair):
    teacher, compressed, clips = pair
    student = copy.deepcopy(compressed)
    teacher_before, student_before = _state(teacher), _state(student)
    settings = HealSettings(block_steps=6, steps=6, lr=1e-3, batch_size=2, eval_every=2, patience=3, num_samples=10,
                            holdout=0.2)
    report = heal(student, teacher, clips, WhisperFeatureExtractor(), settings, progress=False)

    assert all(torch.equal(v, teacher_before[k]) for k, v in teacher.state_dict().items())
    factor_names = {n for n, p in student.named_parameters()
                    if any(p is q for layer in student.get_encoder().layers for q in healing_parameters(layer, False))}
    changed = {k for k, v in student.state_dict().items() if not torch.equal(v, student_before[k])}
    assert changed and changed <= factor_names, changed - factor_names
    assert not any(p.requires_grad for p in student.parameters()) and not any(p.requires_grad for p in
                                                                              teacher.parameters())
    factorized_layers = sum(1 for ranks in student.config.low_rank_config if ranks)
    assert [s.stage for s in report.stages][-1] == "end to end"
    assert len(report.stages) == factorized_layers + 1
    assert (report.windows.train, report.windows.holdout) == (8, 2)
    for stage in report.stages:
        assert 0 < stage.steps <= 6
        assert stage.holdout_loss_after <= stage.holdout_loss_before
    # Each stage ends on its best held-out parameters, and healing did find better ones than the factorization's.
    assert any(s.holdout_loss_after < s.holdout_loss_before for s in report.stages)


def test_clips_are_cut_into_pieces_of_the_asked_lengths():
    rng = np.random.default_rng(1)
    clips = [rng.standard_normal(int(16000 * seconds)).astype(np.float32) for seconds in (20.0, 1.5, 9.3)]
    pieces = cut_pieces(clips, (2.0, 8.0), seed=3)
    assert any(p is clips[1] for p in pieces)  # a clip shorter than the shortest piece stays whole
    for clip in (clips[0], clips[2]):
        own = [p for p in pieces if p.base is clip]
        assert len(own) >= 2 and all(2 * 16000 <= p.size <= 8 * 16000 for p in own[:-1])
        assert 16000 <= own[-1].size <= 8 * 16000  # the remainder, kept when at least half the shortest piece
        assert np.array_equal(np.concatenate(own), clip[: sum(p.size for p in own)])  # in order, nothing repeated
        assert clip.size - sum(p.size for p in own) < 16000
    assert [p.size for p in cut_pieces(clips, (2.0, 8.0), seed=3)] == [p.size for p in pieces]

    settings = HealSettings(num_samples=4, windows="pieces")
    windows = healing_windows(clips, settings)
    assert len(windows) == 4 and all(w.size <= 8 * 16000 for w in windows)
    packed = healing_windows(clips, HealSettings(num_samples=4, windows="packed", pack_seconds=28.0))
    assert len(packed) == 2 and max(w.size for w in packed) > 20 * 16000


def test_layer_norms_train_only_when_asked(pair):
    _, student, _ = pair
    layer = student.get_encoder().layers[0]
    factors = healing_parameters(layer, False)
    with_norms = healing_parameters(layer, True)
    assert len(with_norms) == len(factors) + 4  # two LayerNorms, weight and bias each


def test_a_diverging_learning_rate_is_named(pair):
    teacher, compressed, clips = pair
    student = copy.deepcopy(compressed)
    settings = HealSettings(block_steps=0, steps=20, lr=0.9, batch_size=2, eval_every=5, num_samples=10)
    with pytest.raises(HealingDiverged, match=r"Healing diverged in end to end at step \d+: .* lr 0\.9\. Lower heal\.lr"):
        heal(student, teacher, clips, WhisperFeatureExtractor(), settings, progress=False)


def test_one_batch_far_above_the_first_is_not_divergence_but_a_mean_that_stays_there_is():
    from liteasr_hf.compression.healing import _Stage
    from liteasr_hf.parallel import Processes

    def run(values: list[float]) -> int:
        param = nn.Parameter(torch.zeros(1))
        held_out = 1.0  # the held-out loss before training, and after every step
        stage = _Stage("s", [param], len(values), HealSettings(eval_every=4, patience=100), lambda: held_out,
                       Processes())
        for value in values:
            stage.step((param * 0).sum() + value)
        return stage.done_steps

    assert run([1.0, 1.0, 1.0, 1.0, 15.0, 1.0, 1.0, 1.0]) == 8  # one odd batch: its window's mean is 4.5
    with pytest.raises(HealingDiverged, match=r"at step 6: the loss of the last 4 batches averaged 11\.5, over 10 "
                                              r"times the held-out loss before training \(1\), with lr"):
        run([1.0, 1.0, 1.0, 15.0, 15.0, 15.0, 1.0, 1.0])
    with pytest.raises(HealingDiverged, match="the loss became nan"):
        run([1.0, float("nan")])


#: 16 kHz samples per Whisper encoder position: the feature hop of 160, twice (the second convolution's stride).
SAMPLES_PER_POSITION = WhisperFeatureExtractor().hop_length * 2


def test_position_weights_put_the_speech_share_on_the_audio_and_its_rest_on_the_padding():
    lengths = [2 * 16000, 30 * 16000, 1]  # a 2 s piece, a full window, a single sample
    alike = position_weights(lengths, 1500, None, SAMPLES_PER_POSITION)
    assert torch.allclose(alike, torch.full((3, 1500), 1 / 1500))
    weights = position_weights(lengths, 1500, 0.8, SAMPLES_PER_POSITION)
    assert torch.allclose(weights.sum(dim=1), torch.ones(3))
    speech = 2 * 16000 // SAMPLES_PER_POSITION  # 100 positions
    assert torch.allclose(weights[0, :speech], torch.full((speech,), 0.8 / speech))
    assert torch.allclose(weights[0, speech:], torch.full((1500 - speech,), 0.2 / (1500 - speech)))
    assert torch.allclose(weights[1], alike[1])  # no padding: nothing to weigh apart
    assert weights[2, 0] == pytest.approx(0.8)  # even one sample holds a position


@pytest.mark.parametrize("loss", [_cosine, _normalised_mse])
def test_with_the_whole_share_on_speech_an_error_in_the_padding_costs_nothing(loss):
    torch.manual_seed(0)
    teacher = torch.randn(2, 1500, 8)
    student = teacher.clone()
    student[:, 100:] += torch.randn(2, 1400, 8)  # wrong only after each window's 2 s of audio
    scale = torch.ones(8)
    lengths = [2 * 16000, 2 * 16000]
    speech_only = position_weights(lengths, 1500, 1.0, SAMPLES_PER_POSITION)
    assert float(loss(student, teacher, scale, speech_only)) == pytest.approx(0, abs=1e-6)
    alike = float(loss(student, teacher, scale, position_weights(lengths, 1500, None, SAMPLES_PER_POSITION)))
    assert alike > 0.1
    student[:, :100] += torch.randn(2, 100, 8)  # now wrong on the audio too
    assert float(loss(student, teacher, scale, speech_only)) > 0.1


@pytest.mark.parametrize("clips, message", [
    ([], "No healing audio"),
    ([np.zeros(16000 * 5, dtype=np.float32)] * 3, "The healing audio is silent"),
])
def test_empty_or_silent_audio_is_refused(pair, clips, message):
    teacher, student, _ = pair
    with pytest.raises(ValueError, match=message):
        heal(copy.deepcopy(student), teacher, clips, WhisperFeatureExtractor(), HealSettings(), progress=False)


@pytest.mark.parametrize("values, message", [
    ({"steps": -1}, r"heal\.steps = -1: give a number of gradient steps"),
    ({"steps": 0, "block_steps": 0}, "there is nothing to train"),
    ({"lr": 0}, r"heal\.lr = 0: a learning rate must lie in \(0, 1\)"),
    ({"loss": "l1"}, r"heal\.loss = 'l1': use one of mse, cosine"),
    ({"holdout": 1.0}, r"heal\.holdout = 1\.0"),
    ({"pack_seconds": 45}, r"heal\.pack_seconds = 45: give seconds in \[0, 30\]"),
    ({"windows": "whole"}, r"heal\.windows = 'whole': use one of pieces, packed"),
    ({"piece_seconds": [8, 2]}, r"heal\.piece_seconds = \[8, 2\]: give \[shortest, longest\] seconds"),
    ({"speech_share": 0}, r"heal\.speech_share = 0: give the share of the loss on the audio's positions"),
    ({"speech_share": 1.5}, r"heal\.speech_share = 1\.5"),
    ({"epochs": 3}, r"Unknown heal setting\(s\) \['epochs'\]"),
])
def test_bad_settings_name_the_field(values, message):
    with pytest.raises(ValueError, match=message):
        HealSettings.from_dict(values)


# --- Real tiny.en, through the checkpoint-level entry points -----------------------------------------------------

HEAL_QUICK = {"block_steps": 2, "steps": 2, "batch_size": 1, "eval_every": 1, "num_samples": 2}
# The shipped synthetic calibration clips: a few long clips, enough for a few healing steps.
SHIPPED_AUDIO = SpeechSource(SHIPPED_SPEECH_SET, split="calibration", text_column=None)


@pytest.fixture(scope="module")
def healed_tiny_en(tiny_en_dir, tmp_path_factory):
    """tiny.en compressed by its preset on 2 windows, then healed a few steps on the same audio."""
    from liteasr_hf.compression.checkpoint import compress_checkpoint

    root = tmp_path_factory.mktemp("heal")
    plain, _ = compress_checkpoint(tiny_en_dir, root / "plain", preset="tiny", num_samples=2, progress=False)
    healed, result = compress_checkpoint(tiny_en_dir, root / "healed", preset="tiny", num_samples=2, progress=False,
                                         healing=True, healing_audio=SHIPPED_AUDIO, heal=HEAL_QUICK)
    return plain, healed, result


def test_compress_with_healing_changes_only_the_factors_and_records_it(healed_tiny_en):
    import json

    from safetensors.torch import load_file

    plain, healed, result = healed_tiny_en
    report = json.loads((healed / "compression_report.json").read_text())
    assert report["healing"]["windows"] == {"train": 1, "holdout": 1}
    assert report["settings"]["heal"]["block_steps"] == 2 and report["healing"]["peak_memory_bytes"] > 0
    before, after = load_file(plain / "model.safetensors"), load_file(healed / "model.safetensors")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("model.encoder.layers.") and k.rsplit(".", 1)[1] in ("weight1", "weight2",
                                                                                            "bias") for k in changed)
    assert json.loads((plain / "config.json").read_text())["low_rank_config"] == result.model.config.low_rank_config
    line = describe_healing(CompressionReport.from_dict(report).healing)
    last = report["healing"]["stages"][-1]
    assert line.startswith("Healing took ") and "on 1 windows (1 held out)" in line
    assert f"{last['stage']}: held-out loss {last['holdout_loss_before']:.4g} -> " in line


def test_the_commands_stop_healing_on_the_speakers_they_are_given(healed_tiny_en, tiny_en_dir, tmp_path):
    import json

    from liteasr_hf.cli.compress import main as compress_main
    from liteasr_hf.cli.heal import main as heal_main
    from liteasr_hf.data.suite import LIBRISPEECH_CALIBRATION_SET

    plain, _, _ = healed_tiny_en
    holdout = ["--heal-holdout", str(LIBRISPEECH_CALIBRATION_SET), "--heal-holdout-split", "calibration"]
    config = tmp_path / "quick.yaml"
    config.write_text("heal: {block_steps: 1, steps: 1, batch_size: 1, eval_every: 1, num_samples: 4, holdout: 0.5}\n")
    assert compress_main(["--model", str(tiny_en_dir), "--config", str(config), "--num-samples", "2", "--no-evaluate",
                          "--heal-data", str(SHIPPED_SPEECH_SET), "--heal-split", "calibration", *holdout,
                          "--output", str(tmp_path / "compressed")]) == 0
    assert heal_main(["--model", str(plain), "--teacher", str(tiny_en_dir), "--data", str(SHIPPED_SPEECH_SET), "--split", "calibration",
                      "--holdout-data", str(LIBRISPEECH_CALIBRATION_SET), "--holdout-split", "calibration",
                      "--block-steps", "1", "--steps", "1", "--num-samples", "4", "--batch-size", "1",
                      "--holdout", "0.5", "--output", str(tmp_path / "healed")]) == 0
    for folder in ("compressed", "healed"):
        healing = json.loads((tmp_path / folder / "compression_report.json").read_text())["healing"]
        # the 4 windows are all training windows; the 2 held out come from the readers
        assert healing["windows"] == {"train": 4, "holdout": 2}
        assert healing["holdout_data"]["data"].endswith("librispeech-calibration")
        assert healing["holdout_data"]["split"] == "calibration"


def test_an_offloaded_model_heals_exactly_like_a_resident_one(healed_tiny_en, tiny_en_dir, tmp_path):
    # Every weight offloaded to disk (a CPU cap below the model's size): compression loads the encoder layer by layer,
    # and the teacher is streamed in from its own offload folder on every forward. Placement must not change a bit.
    from safetensors.torch import load_file

    from liteasr_hf.checkpoints.placement import Placement
    from liteasr_hf.compression.checkpoint import compress_checkpoint

    _, resident, _ = healed_tiny_en
    offloaded, result = compress_checkpoint(
        tiny_en_dir, tmp_path / "healed", preset="tiny", num_samples=2, progress=False, healing=True,
        healing_audio=SHIPPED_AUDIO, heal=HEAL_QUICK,
        placement=Placement(device_map="auto", max_memory={"cpu": 40_000_000}, offload_folder=tmp_path / "offload"))
    assert result.report.placement == ["disk"] and result.report.healing.stages
    assert (tmp_path / "offload" / "teacher").is_dir()  # the teacher was offloaded too, beside the student's weights
    a, b = load_file(resident / "model.safetensors"), load_file(offloaded / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0, msg=key)


def test_heal_checkpoint_heals_a_saved_folder_and_a_divergent_run_writes_nothing(healed_tiny_en, tiny_en_dir,
                                                                                  tmp_path):
    import json

    from liteasr_hf.compression.checkpoint import heal_checkpoint

    plain, _, _ = healed_tiny_en
    folder, report = heal_checkpoint(plain, tmp_path / "again", teacher=tiny_en_dir, audio=SHIPPED_AUDIO,
                                     settings=HealSettings(**HEAL_QUICK), progress=False,
                                     command="liteasr heal --block-steps 2 --steps 2")
    saved = json.loads((folder / "compression_report.json").read_text())
    assert saved["healing"]["command"] == "liteasr heal --block-steps 2 --steps 2"
    assert saved["healing"]["stages"] == [stage.to_dict() for stage in report.stages] and saved["low_rank_config"]
    assert (folder / "rank_plan.json").is_file() and (folder / "preprocessor_config.json").is_file()
    with pytest.raises(HealingDiverged):
        heal_checkpoint(plain, tmp_path / "diverged", teacher=tiny_en_dir, audio=SHIPPED_AUDIO, progress=False,
                        settings=HealSettings(**{**HEAL_QUICK, "block_steps": 0, "steps": 20, "lr": 0.9}))
    assert not (tmp_path / "diverged").exists()


def test_the_decoder_loss_reads_the_dense_models_own_transcripts(healed_tiny_en, tiny_en_dir):
    from transformers import WhisperProcessor

    from liteasr_hf.compression.decoder_loss import decoder_kl, decoder_prompt, teacher_transcripts
    from liteasr_hf.data.speech import load_speech
    from liteasr_hf import LiteWhisperForConditionalGeneration

    plain, _, _ = healed_tiny_en
    teacher = WhisperForConditionalGeneration.from_pretrained(tiny_en_dir).eval()
    student = LiteWhisperForConditionalGeneration.from_pretrained(plain).eval()
    processor = WhisperProcessor.from_pretrained(tiny_en_dir)
    utterances, _ = load_speech(SHIPPED_SPEECH_SET, split="evaluation", max_samples=3)
    features = processor.feature_extractor([u.audio for u in utterances], sampling_rate=16000,
                                           return_tensors="pt").input_features
    transcripts = teacher_transcripts(teacher, features, batch_size=2)

    prompt = decoder_prompt(teacher.generation_config)
    assert prompt == [teacher.generation_config.decoder_start_token_id,
                      teacher.generation_config.no_timestamps_token_id]  # English-only: no language or task
    assert transcripts.tokens[:, :len(prompt)].tolist() == [prompt] * 3
    with torch.no_grad():
        said = processor.batch_decode(teacher.generate(features, max_new_tokens=96), skip_special_tokens=True)
    # What the loss scores is the transcript and its end-of-text, token for token.
    eos = teacher.generation_config.eos_token_id
    for row, scored, text in zip(transcripts.tokens, transcripts.targets, said, strict=True):
        next_tokens = row[1:][scored].tolist()
        assert next_tokens[-1] == eos and eos not in next_tokens[:-1]
        assert processor.tokenizer.decode(next_tokens[:-1]).strip() == text.strip() != ""
    assert transcripts.scored_tokens == int(transcripts.targets.sum()) > 3
    with torch.no_grad():  # from the encoder output healing already holds: the same transcripts
        again = teacher_transcripts(teacher, features, batch_size=2,
                                    encoder_hidden=teacher.get_encoder()(features).last_hidden_state)
    assert again.tokens.tolist() == transcripts.tokens.tolist()
    assert again.targets.tolist() == transcripts.targets.tolist()

    with torch.no_grad():
        dense = teacher.get_encoder()(features).last_hidden_state
        compressed = student.get_encoder()(features).last_hidden_state
        same = decoder_kl(student, dense, dense, transcripts.tokens, transcripts.targets)
        moved = decoder_kl(student, compressed, dense, transcripts.tokens, transcripts.targets)
    assert abs(float(same)) < 1e-6 < float(moved)


def test_healing_through_the_decoder_lowers_its_held_out_divergence(healed_tiny_en, tiny_en_dir, tmp_path):
    import json

    from liteasr_hf.compression.checkpoint import heal_checkpoint

    plain, _, _ = healed_tiny_en
    settings = HealSettings(block_steps=0, steps=4, lr=1e-4, batch_size=2, eval_every=1, num_samples=6,
                            holdout=0.34, loss="decoder")
    folder, report = heal_checkpoint(plain, tmp_path / "healed", teacher=tiny_en_dir, audio=SHIPPED_AUDIO,
                                     settings=settings, progress=False)
    (stage,) = report.stages
    assert stage.stage == "end to end" and 0 < stage.holdout_loss_after < stage.holdout_loss_before
    assert json.loads((folder / "compression_report.json").read_text())["healing"]["settings"]["loss"] == "decoder"
