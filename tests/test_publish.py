"""Publishing to the Hub, end to end over real HTTP: a Hub-compatible server on 127.0.0.1 (tests/hub_server.py), the
real huggingface_hub client, and a clean process that downloads the repo and loads it with remote code only."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from huggingface_hub import HfApi, ModelCard, constants
from transformers import GenerationConfig, WhisperConfig, WhisperProcessor

from liteasr_hf import LiteWhisperConfig, LiteWhisperForConditionalGeneration
from liteasr_hf.compression.compressor import compression_report
from liteasr_hf.checkpoints.saving import save_model_folder
from liteasr_hf.data.speech import SHIPPED_SPEECH_SET
from liteasr_hf.hub.model_card import check_card, validate_card_on_hub
from liteasr_hf.compression.presets import load_settings
from liteasr_hf.hub import (
    BLOCK_LITEASR_HF,
    PublishError,
    check_staged_folder,
    publish,
    publish_batch,
    stage_folder,
    upload_staged_folder,
)
from liteasr_hf.compression.rank_selection import RankPlan

# huggingface_hub's own LFS upload passes the file as `data=`, which its HTTP client deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

sys.path.insert(0, str(Path(__file__).parent))
from hub_server import HubServer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import upload as upload_script

SMALL = {"d_model": 64, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4,
         "decoder_attention_heads": 4, "encoder_ffn_dim": 128, "decoder_ffn_dim": 128}
RANKS = [{"q_proj": 16, "k_proj": 16, "fc1": 32}, {"v_proj": 32, "fc2": 48}]
VARIANCE = [{"q_proj": 0.991, "k_proj": 0.993, "fc1": 0.9987}, {"v_proj": 0.995, "fc2": 0.9991}]
LIBRISPEECH = ("openslr/librispeech_asr", "clean", "test")
FILES = {  # besides the code files
    "README.md", "config.json", "generation_config.json", "model.safetensors", "compression_report.json",
    "processor_config.json", "tokenizer.json", "tokenizer_config.json", "normalizer.json",
}


def expected_files(model_dir: Path) -> set[str]:
    """What a staged folder must hold: ``FILES`` and the code save_pretrained copied (the three modules config.json
    names and whatever they import relatively)."""
    code = {p.name for p in model_dir.glob("*.py")}
    assert {"configuration_lite_whisper.py", "modeling_lite_whisper.py", "pipeline_lite_whisper.py"} <= code
    return FILES | code


def summary(model: Path | str, model_type: str, encoder_params: int, wer: float, rtfx: float,
            data: str, config: str | None, split: str) -> dict:
    """An evaluation summary with the fields scripts/evaluate.py writes."""
    return {
        "model": str(model), "model_path": str(model), "model_type": model_type, "data": data, "config": config,
        "split": split, "n_utterances": 165, "n_failed": 0, "failed": [], "wer": wer, "errors": 1, "substitutions": 1,
        "deletions": 0, "insertions": 0, "reference_words": 1316, "n_scored": 165, "n_empty_references": 0,
        "empty_reference_ids": [], "n_long_outputs": 0, "long_output_ids": [], "rtfx": rtfx,
        "total_audio_seconds": 416.418, "compute_seconds": 97.5, "encoder_params": encoder_params, "device": "cpu",
        "dtype": "float32", "batch_size": 8, "language": None, "max_new_tokens": None, "warmup_batches": 1,
        "normalizer": "whisper-english (spelling: tokenizer normalizer.json)", "timestamp": "2026-01-01T00:00:00+00:00",
    }


@pytest.fixture(scope="module")
def lite_model(tiny_en_dir, tmp_path_factory) -> Path:
    """A small random LiteWhisper with tiny.en's tokenizer, feature extractor and generation config, saved as
    scripts/compress.py saves (with compression_report.json and rank_plan.json), and its evaluation folder."""
    whisper = WhisperConfig.from_pretrained(tiny_en_dir)
    config = LiteWhisperConfig.from_whisper_config(WhisperConfig(**{**whisper.to_dict(), **SMALL}), RANKS)
    torch.manual_seed(0)
    model = LiteWhisperForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig.from_pretrained(tiny_en_dir)
    with torch.no_grad():
        # Random weights would generate up to max_length (448) tokens: a final-norm bias along the end-of-text
        # embedding (tied to the output layer) makes the card's snippets stop after a few, and leaves the logits
        # dependent on every weight. (tiny.en's end-of-text is also its padding token, whose row starts at zero.)
        direction = torch.nn.functional.normalize(torch.randn(SMALL["d_model"]), dim=0)
        model.model.decoder.embed_tokens.weight[model.generation_config.eos_token_id] = direction
        model.model.decoder.layer_norm.bias.copy_(20 * direction)
    plan = RankPlan(RANKS, VARIANCE, {"mode": "threshold", "calibration": "sequential"})
    report = compression_report(config, plan, load_settings("tiny"), [np.zeros(16000 * 20, np.float32)], 1.5)
    report.update(source_model="tiny.en", resolved_model=str(tiny_en_dir), device="cpu", dtype="float32",
                  calibration_data={"data": str(SHIPPED_SPEECH_SET), "split": "calibration", "failed": 0},
                  total_seconds=2.0)
    root = tmp_path_factory.mktemp("models")
    extra = {"compression_report.json": report, "rank_plan.json": json.dumps(RANKS)}
    folder = save_model_folder(model, root / "lite-whisper-tiny",
                               processor=WhisperProcessor.from_pretrained(tiny_en_dir), extra_files=extra)
    evaluation = root / "lite-whisper-tiny-evaluation"
    evaluation.mkdir()
    enc = report["encoder"]
    for name, content in {
        "lite-whisper-tiny__speech-evaluation": summary(folder, "lite-whisper", enc["params_after"], 23.45, 6.1,
                                                         str(SHIPPED_SPEECH_SET), None, "evaluation"),
        "whisper-tiny.en__speech-evaluation": summary(tiny_en_dir, "whisper", enc["params_before"], 19.83, 5.3,
                                                       str(SHIPPED_SPEECH_SET), None, "evaluation"),
        "lite-whisper-tiny__librispeech": summary(folder, "lite-whisper", enc["params_after"], 31.2, 7.0, *LIBRISPEECH),
    }.items():
        (evaluation / f"{name}.summary.json").write_text(json.dumps(content, indent=2))
    return folder


@pytest.fixture(scope="module")
def staged(lite_model, tmp_path_factory):
    return stage_folder(lite_model, "org/lite-whisper-tiny", tmp_path_factory.mktemp("stage") / "staged",
                        evaluation=[lite_model.parent / "lite-whisper-tiny-evaluation"])


@pytest.fixture(autouse=True)
def hub_client(monkeypatch, tmp_path):
    """huggingface_hub reads HF_HUB_DISABLE_XET and the token path at import: set them on its constants.
    No token is found unless a test provides one."""
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)  # plain LFS, which the test server speaks
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf_home" / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf_home" / "stored_tokens"))
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def hub():
    with HubServer() as server:
        yield server


def digest(folder: Path) -> dict[str, str]:
    """sha256 and mode of every file under ``folder``: to show a folder was left untouched."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() + oct(p.stat().st_mode)
            for p in sorted(folder.rglob("*")) if p.is_file()}


# --- dry run, staging, card ----------------------------------------------------------------------------------


def test_dry_run_stages_checks_and_touches_no_network(lite_model, hub, tmp_path, capsys):
    before = digest(lite_model)
    code = upload_script.main(["--model", str(lite_model), "--repo-id", "org/lite-whisper-tiny", "--dry-run",
                               "--endpoint", hub.api_url, "--staging-dir", str(tmp_path / "staged")])
    captured = capsys.readouterr()
    out = captured.out
    assert code == 0, captured.err
    assert hub.requests == []  # no token needed, no request made
    assert "Dry run: nothing was uploaded." in out
    for name in expected_files(lite_model):
        assert re.search(rf"^  {re.escape(name)}\s+[\d.]+ [kM]?B$", out, re.MULTILINE), name
    # The clean-process check ran: loaded with the repo's own code, liteasr_hf unimportable there.
    assert "Check: loads with trust_remote_code without liteasr_hf as LiteWhisperForConditionalGeneration" in out
    assert "WER 23.45 on liteasr-hf speech set (evaluation)" in out
    assert "rank_plan.json is not published" in out
    assert digest(lite_model) == before


def test_staged_folder_holds_exactly_what_a_user_needs(staged, lite_model):
    assert set(staged.files) == expected_files(lite_model) == {p.name for p in staged.path.iterdir()}
    for name in expected_files(lite_model) - {"README.md"}:  # copies, byte for byte
        assert (staged.path / name).read_bytes() == (lite_model / name).read_bytes(), name
    config = json.loads((staged.path / "config.json").read_text())
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForSpeechSeq2Seq"}
    assert config["custom_pipelines"]["automatic-speech-recognition"]["impl"].startswith("pipeline_lite_whisper.")
    assert json.loads((staged.path / "generation_config.json").read_text())["max_length"] == 448
    assert (lite_model / "rank_plan.json").is_file()  # in the source, left out of the Hub copy


def test_card_metadata_is_valid_and_carries_the_evaluation_numbers(staged, lite_model, hub):
    card = ModelCard.load(staged.path / "README.md")
    data = card.data.to_dict()
    assert data["base_model"] == "openai/whisper-tiny.en"
    assert (data["library_name"], data["pipeline_tag"], data["license"]) == (
        "transformers", "automatic-speech-recognition", "apache-2.0")
    assert data["language"] == ["en"] and {"lite-whisper", "liteasr"} <= set(data["tags"])
    assert data["datasets"] == ["openslr/librispeech_asr"]  # Hub ids only; the local set is named in the body
    results = {(r.dataset_type, r.dataset_config, r.dataset_split): (r.metric_type, r.metric_value)
               for r in card.data.eval_results}
    evaluation = lite_model.parent / "lite-whisper-tiny-evaluation"
    wer = {p.name.split(".")[0]: json.loads(p.read_text())["wer"] for p in evaluation.iterdir()}
    assert results == {
        ("liteasr-hf-speech", None, "evaluation"): ("wer", wer["lite-whisper-tiny__speech-evaluation"]),
        LIBRISPEECH: ("wer", wer["lite-whisper-tiny__librispeech"]),
    }
    validate_card_on_hub(card, endpoint=hub.api_url)  # the Hub's own check of the metadata

    text = card.text
    enc = json.loads((lite_model / "compression_report.json").read_text())["encoder"]
    base_row = next(line for line in text.splitlines() if line.startswith("| [openai/whisper-tiny.en]"))
    our_row = next(line for line in text.splitlines() if line.startswith("| **lite-whisper-tiny**"))
    assert f"{enc['params_before'] / 1e6:.2f}M (100%)" in base_row and "| 19.83 | 5.3 |" in base_row
    assert base_row.endswith("| not evaluated | not evaluated |")  # the base model has no LibriSpeech result
    assert f"{enc['params_after'] / 1e6:.2f}M ({100 * enc['params_after'] / enc['params_before']:.1f}%)" in our_row
    assert our_row.endswith("| 23.45 | 6.1 | 31.20 | 7.0 |")
    assert "<details>" in text and "| 0 | 16 (99.10%) | 16 (99.30%) | dense | dense | 32 (99.87%) | dense |" in text
    assert "`python scripts/compress.py --model tiny.en --preset tiny`" in text
    assert 'from_pretrained("org/lite-whisper-tiny", trust_remote_code=True)' in text
    assert "arXiv preprint arXiv:2502.20583" in text and "Kamahori" in text

    broken = str(card).replace("license: apache-2.0", "license: apache2")
    with pytest.raises(ValueError, match="license"):
        validate_card_on_hub(broken, endpoint=hub.api_url)
    with pytest.raises(ValueError, match="base_model is missing"):
        check_card(re.sub(r"^base_model: .*\n", "", str(card), flags=re.MULTILINE))


def test_missing_evaluation_is_stated_as_missing(lite_model, tmp_path):
    staged = stage_folder(lite_model, "org/lite-whisper-tiny", tmp_path / "staged", evaluation=[])
    card = ModelCard.load(staged.path / "README.md")
    assert card.data.eval_results is None and "model-index" not in str(card)
    assert "No evaluation results were supplied" in card.text
    assert "23.45" not in card.text and "19.83" not in card.text
    # Only the base model's result: ours is reported missing, not invented.
    base_only = stage_folder(lite_model, "org/lite-whisper-tiny", tmp_path / "staged2", evaluation=[
        lite_model.parent / "lite-whisper-tiny-evaluation" / "whisper-tiny.en__speech-evaluation.summary.json"])
    text = (base_only.path / "README.md").read_text()
    assert "**This model was not evaluated**" in text and "model-index" not in text
    assert re.search(r"^\| \*\*lite-whisper-tiny\*\*.*\| not evaluated \| not evaluated \|$", text, re.MULTILINE)


# --- upload, re-upload, download with remote code ---------------------------------------------------------------

DOWNLOAD_AND_LOAD = BLOCK_LITEASR_HF + textwrap.dedent(
    """
    import json, re
    import torch
    from huggingface_hub import snapshot_download
    from transformers import AutoModelForSpeechSeq2Seq
    repo_id, features, out = sys.argv[1:4]
    snapshot = snapshot_download(repo_id)
    # The card's usage snippets, as a reader would paste them (speech.flac is in the working folder).
    card = open(snapshot + "/README.md", encoding="utf-8").read()
    snippets = re.findall(r"```python\\n(.*?)```", card, re.DOTALL)
    for snippet in snippets:
        exec(compile(snippet, "README.md", "exec"), {})
    model = AutoModelForSpeechSeq2Seq.from_pretrained(repo_id, trust_remote_code=True).eval()
    feats = torch.load(features)
    ids = torch.tensor([[50257, 50362, 440, 1049]] * feats.shape[0])
    with torch.no_grad():
        logits = model(input_features=feats, decoder_input_ids=ids).logits
    assert not any(m.split(".")[0] == "liteasr_hf" for m in sys.modules)
    torch.save({"logits": logits, "snapshot": snapshot, "snippets": len(snippets), "class": type(model).__name__}, out)
    """
)


def test_upload_reupload_download_and_load_with_remote_code(staged, lite_model, hub, tmp_path):
    result = upload_staged_folder(staged.path, "org/lite-whisper-tiny", token=hub.token, endpoint=hub.api_url,
                                  commit_message="Publish lite-whisper-tiny")
    assert sorted(result.changed) == sorted(staged.files) and result.revision == "main"
    stored = hub.files("org/lite-whisper-tiny")
    assert set(stored) == expected_files(lite_model) | {".gitattributes"}
    assert all(stored[name] == (staged.path / name).read_bytes() for name in staged.files)
    tree = {f.path: f for f in HfApi(endpoint=hub.api_url).list_repo_tree("org/lite-whisper-tiny", recursive=True)}
    weights = (staged.path / "model.safetensors").read_bytes()
    assert tree["model.safetensors"].lfs.sha256 == hashlib.sha256(weights).hexdigest()  # went through LFS
    commits = hub.commit_count("org/lite-whisper-tiny")

    again = upload_staged_folder(staged.path, "org/lite-whisper-tiny", token=hub.token, endpoint=hub.api_url)
    assert again.changed == [] and again.deleted == [] and again.commit_oid == result.commit_oid
    assert hub.commit_count("org/lite-whisper-tiny") == commits
    assert sum(path.endswith("/commit/main") for _, _, path in hub.requests) == 1  # the first upload's only

    # A user elsewhere: a fresh cache, HF_ENDPOINT at the server, no liteasr_hf, real HTTP (LFS through the CDN host).
    audio, rate = sf.read(SHIPPED_SPEECH_SET / "evaluation" / json.loads(
        (SHIPPED_SPEECH_SET / "evaluation" / "metadata.jsonl").read_text().splitlines()[0])["file_name"])
    sf.write(tmp_path / "speech.flac", audio, rate)
    feats = torch.randn(2, 80, 3000, generator=torch.Generator().manual_seed(0))
    torch.save(feats, tmp_path / "feats.pt")
    (tmp_path / "load.py").write_text(DOWNLOAD_AND_LOAD)
    env = {"PATH": os.environ["PATH"], "HF_ENDPOINT": hub.api_url, "HF_HUB_DISABLE_XET": "1", "OMP_NUM_THREADS": "1",
           "HF_HOME": str(tmp_path / "hf_home"), "NO_PROXY": "127.0.0.1,localhost", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    args = ["org/lite-whisper-tiny", str(tmp_path / "feats.pt"), str(tmp_path / "out.pt")]
    run = subprocess.run([sys.executable, str(tmp_path / "load.py"), *args], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-4000:]
    out = torch.load(tmp_path / "out.pt")
    assert out["class"] == "LiteWhisperForConditionalGeneration" and out["snippets"] == 2
    assert digest(Path(out["snapshot"])).keys() == set(stored)
    assert all(Path(out["snapshot"], name).read_bytes() == data for name, data in stored.items())
    local = LiteWhisperForConditionalGeneration.from_pretrained(lite_model).eval()
    with torch.no_grad():
        expected = local(input_features=feats, decoder_input_ids=torch.tensor([[50257, 50362, 440, 1049]] * 2)).logits
    torch.testing.assert_close(out["logits"], expected, rtol=0, atol=0)
    assert any(host.startswith("localhost:") and path.startswith("/cdn/lfs/") for _, host, path in hub.requests)


def test_create_pr_and_branch_leave_main_alone(staged, lite_model, hub, tmp_path):
    upload_staged_folder(staged.path, "org/lite-whisper-tiny", token=hub.token, endpoint=hub.api_url)
    main_before = hub.files("org/lite-whisper-tiny")
    changed = stage_folder(lite_model, "org/lite-whisper-tiny", tmp_path / "mit", license="mit",
                           evaluation=[lite_model.parent / "lite-whisper-tiny-evaluation"])
    pr = upload_staged_folder(changed.path, "org/lite-whisper-tiny", create_pr=True, token=hub.token,
                              endpoint=hub.api_url)
    assert pr.changed == ["README.md"] and pr.revision == "refs/pr/1" and pr.pr_url.endswith("/discussions/1")
    refs = HfApi(endpoint=hub.api_url).list_repo_refs("org/lite-whisper-tiny", include_pull_requests=True)
    assert [r.ref for r in refs.pull_requests] == ["refs/pr/1"]
    assert hub.files("org/lite-whisper-tiny") == main_before
    assert hub.files("org/lite-whisper-tiny", "refs/pr/1")["README.md"] == (changed.path / "README.md").read_bytes()

    branch = upload_staged_folder(changed.path, "org/lite-whisper-tiny", revision="v2", token=hub.token,
                                  endpoint=hub.api_url)
    assert branch.revision == "v2" and branch.changed == ["README.md"]
    assert b"license: mit" in hub.files("org/lite-whisper-tiny", "v2")["README.md"]
    assert hub.files("org/lite-whisper-tiny") == main_before


def test_batch_publish(lite_model, hub, tmp_path, monkeypatch, capsys):
    batch = tmp_path / "publish.yaml"
    batch.write_text(textwrap.dedent(f"""
        defaults:
          license: apache-2.0
        variants:
          - model: {lite_model}
            repo_id: org/lite-whisper-tiny
            staging_dir: {tmp_path / "stage-a"}
            evaluation: {lite_model.parent / "lite-whisper-tiny-evaluation"}
          - model: {lite_model}
            repo_id: org/lite-whisper-tiny-private
            staging_dir: {tmp_path / "stage-b"}
            evaluation: []
            private: true
    """))
    results = publish_batch(batch, token=hub.token, endpoint=hub.api_url, check=False)
    assert [r.upload.repo_id for r in results] == ["org/lite-whisper-tiny", "org/lite-whisper-tiny-private"]
    assert hub.repo("org/lite-whisper-tiny-private").private and not hub.repo("org/lite-whisper-tiny").private
    for result in results:
        stored = hub.files(result.upload.repo_id)
        assert all(stored[name] == (result.staged.path / name).read_bytes() for name in result.staged.files)
    assert b"No evaluation results were supplied" in hub.files("org/lite-whisper-tiny-private")["README.md"]

    monkeypatch.setenv("HF_TOKEN", hub.token)  # the CLI takes the token from huggingface_hub's usual places
    code = upload_script.main(["--batch", str(batch), "--endpoint", hub.api_url, "--skip-check"])
    out = capsys.readouterr().out
    assert code == 0 and out.count("already holds these files") == 2
    assert hub.token not in out


# --- bad input -------------------------------------------------------------------------------------------------


def test_not_a_lite_whisper_folder(lite_model, tiny_en_dir, tmp_path, capsys):
    with pytest.raises(ValueError, match="holds a 'whisper' model, not a LiteWhisper model.*scripts/compress.py"):
        stage_folder(tiny_en_dir, "org/x", tmp_path / "s")
    with pytest.raises(ValueError, match="has no config.json: it is not a model folder"):
        stage_folder(tmp_path, "org/x", tmp_path.parent / "s")
    no_report = tmp_path / "no-report"
    shutil.copytree(lite_model, no_report)
    (no_report / "compression_report.json").unlink()
    with pytest.raises(ValueError, match="has no compression_report.json"):
        stage_folder(no_report, "org/x", tmp_path / "s")
    code = upload_script.main(["--model", str(tiny_en_dir), "--repo-id", "org/x", "--dry-run",
                               "--staging-dir", str(tmp_path / "s")])
    assert code == 2 and capsys.readouterr().err.startswith("error: ")
    assert not (tmp_path / "s").exists()


def test_missing_evaluation_file_and_malformed_repo_id(lite_model, tmp_path, capsys):
    missing = tmp_path / "nowhere.summary.json"
    with pytest.raises(FileNotFoundError, match=f"{re.escape(str(missing))} does not exist.*--no-evaluation"):
        stage_folder(lite_model, "org/x", tmp_path / "s", evaluation=[missing])
    for bad in ("lite-whisper-tiny", "org/team/model", "org/bad name", "org/double--dash"):
        with pytest.raises(ValueError, match="malformed"):
            stage_folder(lite_model, bad, tmp_path / "s")
    code = upload_script.main(["--model", str(lite_model), "--repo-id", "not a repo", "--dry-run"])
    assert code == 2 and "namespace/name" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_batch_file_errors_name_the_variant_and_key(lite_model, tmp_path):
    batch = tmp_path / "publish.yaml"
    for variants, message in [
        (["{model: M, repo_id: org/a, privat: true}"], r"variants\[0\] has unknown key\(s\) \['privat'\]"),
        (["{model: M, repo_id: org/a, private: 'false'}"], r"variants\[0\]\.private must be true or false"),
        (["{model: M}"], r"variants\[0\] needs 'repo_id'"),
        (["{model: M, repo_id: org/a}", "{model: M, repo_id: org/b}"], "share a staging_dir"),
    ]:
        batch.write_text("variants:\n" + "".join(f"  - {v.replace('M', str(lite_model))}\n" for v in variants))
        with pytest.raises(ValueError, match=message):
            publish_batch(batch, dry_run=True, check=False)
    batch.write_text("models: []\n")
    with pytest.raises(ValueError, match="must hold a 'variants' list"):
        publish_batch(batch, dry_run=True, check=False)
    assert not list(lite_model.parent.glob("*-hub"))  # nothing staged


def test_no_token_is_a_clear_error_before_any_request(lite_model, hub, tmp_path, capsys):
    code = upload_script.main(["--model", str(lite_model), "--repo-id", "org/x", "--endpoint", hub.api_url,
                               "--staging-dir", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 2 and "No Hugging Face token found" in err and "hf auth login" in err
    assert hub.requests == [] and not (tmp_path / "s").exists()


def test_server_error_mid_upload_leaves_everything_untouched(staged, lite_model, hub):
    before_staged, before_source = digest(staged.path), digest(lite_model)
    hub.fail("commit", 500)
    with pytest.raises(PublishError) as err:
        upload_staged_folder(staged.path, "org/lite-whisper-tiny", token=hub.token, endpoint=hub.api_url)
    message = str(err.value)
    assert "500" in message and "committing to org/lite-whisper-tiny@main" in message
    assert f"The staged folder {staged.path} is unchanged" in message and "again to retry" in message
    assert hub.commit_count("org/lite-whisper-tiny") == 1  # only the repo's initial commit
    assert digest(staged.path) == before_staged and digest(lite_model) == before_source

    # The retry commits; the weights uploaded before the failure are not sent again.
    puts = sum(method == "PUT" for method, _, _ in hub.requests)
    result = upload_staged_folder(staged.path, "org/lite-whisper-tiny", token=hub.token, endpoint=hub.api_url)
    assert "model.safetensors" in result.changed and hub.commit_count("org/lite-whisper-tiny") == 2
    assert sum(method == "PUT" for method, _, _ in hub.requests) == puts


def test_existing_public_repo_is_not_published_to_as_private(staged, hub):
    HfApi(endpoint=hub.api_url, token=hub.token).create_repo("org/lite-whisper-tiny")
    with pytest.raises(PublishError, match="already exists and is public"):
        upload_staged_folder(staged.path, "org/lite-whisper-tiny", private=True, token=hub.token,
                             endpoint=hub.api_url)
    assert hub.commit_count("org/lite-whisper-tiny") == 1


def test_check_catches_a_folder_that_needs_the_package(staged, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(staged.path, broken)
    modeling = broken / "modeling_lite_whisper.py"
    modeling.write_text("import liteasr_hf.checkpoints.saving  # a leaked dependency\n" + modeling.read_text())
    with pytest.raises(ValueError, match="(?s)does not load with trust_remote_code.*liteasr_hf is blocked"):
        check_staged_folder(broken)


def test_publish_dry_run_returns_the_staged_folder_without_uploading(lite_model, hub, tmp_path):
    result = publish(lite_model, "org/lite-whisper-tiny", staging_dir=tmp_path / "s", dry_run=True, check=False,
                     endpoint=hub.api_url)
    assert result.upload is None and set(result.staged.files) == expected_files(lite_model) and hub.requests == []
