"""The healing ablation on real tiny.en: variants compressed and healed, each evaluated on the same clips, WER split
into synthetic voices and real recordings."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from liteasr_hf.compression.healing import HealSettings
from liteasr_hf.data.speech import SHIPPED_SPEECH_SET, SpeechSource
from liteasr_hf.evaluation.ablation import format_ablation, real_recording_ids, run_healing_ablation


@pytest.fixture(scope="module")
def small_evaluation(tmp_path_factory):
    """A synthetic clip and a real recording of the shipped evaluation split, as an audiofolder."""
    source = SHIPPED_SPEECH_SET / "evaluation"
    rows = [json.loads(line) for line in (source / "metadata.jsonl").read_text().splitlines()]
    real = [r for r in rows if r["engine"] == "recording"][:1]
    synthetic = [r for r in rows if r["engine"] != "recording"][:1]
    root = tmp_path_factory.mktemp("speech")
    (root / "evaluation").mkdir()
    for row in real + synthetic:
        shutil.copy(source / row["file_name"], root / "evaluation" / row["file_name"])
    (root / "evaluation" / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in real + synthetic))
    return SpeechSource(root, split="evaluation"), {r["id"] for r in real}


def test_real_recordings_are_found_by_the_engine_column(small_evaluation):
    source, real = small_evaluation
    assert real_recording_ids(source) == real and len(real) == 1
    assert real_recording_ids(SpeechSource(SHIPPED_SPEECH_SET, split="evaluation")) >= real


@pytest.mark.slow  # 86 s on 2 cores (compress, heal, four evaluations); `make test-slow` runs it
def test_ablation_compresses_heals_and_scores_every_variant(tiny_en_dir, small_evaluation, tmp_path):
    source, _ = small_evaluation
    heal = HealSettings(block_steps=2, steps=2, batch_size=1, eval_every=1, num_samples=2)
    report = run_healing_ablation(
        tiny_en_dir, tmp_path, budget=0.8, preset="tiny", variants=("ours+block+e2e",), heal=heal,
        healing_audio=SpeechSource(SHIPPED_SPEECH_SET, split="calibration", text_column=None),
        evaluations={"small": source}, num_samples=2, progress=False)
    results = report["results"]
    assert list(results) == ["original", "ours+block+e2e"]  # "ours" is made (healing starts from it), not evaluated
    assert report["evaluation"] == {"small": 2, "small synthetic": 1, "small real": 1}
    for r in results.values():
        wer = r["wer"]
        assert wer["small synthetic"]["utterances"] == 1 and wer["small real"]["utterances"] == 1
        assert wer["small"]["errors"] == wer["small synthetic"]["errors"] + wer["small real"]["errors"]
        assert len(r["predictions"]) == 2
    assert results["ours+block+e2e"]["encoder_params"] <= 0.8 * results["original"]["encoder_params"]
    stages = [s["stage"] for s in results["ours+block+e2e"]["stages"]]
    assert stages[0] == "encoder layer 0" and stages[-1] == "end to end"
    assert results["ours+block+e2e"]["heal_seconds"] > 0
    assert "heal_seconds" not in results["original"] and (tmp_path / "ours" / "model.safetensors").is_file()
    saved = json.loads((tmp_path / "ablation.json").read_text())
    assert saved["results"]["ours+block+e2e"]["wer"] == results["ours+block+e2e"]["wer"]
    table = (tmp_path / "ablation.md").read_text()
    assert table == format_ablation(report) + "\n" and table.count("\n") == 4 and "GiB peak" in table
    assert (tmp_path / "ours-block-e2e" / "model.safetensors").is_file()
    with pytest.raises(FileExistsError, match="ablation.json already exists"):
        run_healing_ablation(tiny_en_dir, tmp_path, budget=0.8, variants=("ours",), evaluations={"small": source})
    with pytest.raises(ValueError, match=r"Unknown variant\(s\) \['fancy'\]"):
        run_healing_ablation(tiny_en_dir, tmp_path / "x", budget=0.8, variants=("fancy",),
                             evaluations={"small": source})


def test_calibration_ablation_variants_are_named_by_their_folders(capsys):
    import importlib

    from liteasr_hf.evaluation.calibration_ablation import INGREDIENTS, variant_slug

    slugs = [variant_slug(name) for name in INGREDIENTS]
    assert slugs == ["synthetic-voices", "real-speakers", "real-augmented", "mix", "mix-librispeech-readers"]
    script = importlib.import_module("liteasr_hf.cli.ablate_calibration")
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--budget", "0.9", "--variants", "mix (default)", "--output", "unused"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'mix (default)' (choose from 'synthetic-voices'" in capsys.readouterr().err
