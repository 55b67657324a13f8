"""The package layout: the Hub-bound model folder holds exactly what travels to the Hub and imports only what a
Hub user has; folders saved before the layout change still load; top-level names and sub-packages import."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForSpeechSeq2Seq

import liteasr_hf
from liteasr_hf.checkpoints.saving import save_model_folder
from liteasr_hf.hub.check import BLOCK_LITEASR_HF

MODEL_DIR = Path(liteasr_hf.__file__).parent / "models" / "lite_whisper"
OLD_FOLDER = Path(__file__).parent / "data" / "saved_before_layout"
SUB_PACKAGES = ("checkpoints", "compression", "data", "evaluation", "hub", "integrations", "integrations.onnx",
                "integrations.vllm")


def _imported_modules(path: Path) -> list[tuple[int, str, int]]:
    """``(line, module, level)`` of every import in ``path``, nested ones (inside functions, try blocks) included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, node.module or "", node.level))
    return found


def test_hub_bound_files_import_only_stdlib_torch_transformers_and_each_other():
    siblings = {p.stem for p in MODEL_DIR.glob("*.py")}
    allowed = set(sys.stdlib_module_names) | {"torch", "transformers", "__future__"}
    # Triton is imported lazily and only on CUDA by the kernel file (CUDA builds of torch ship it); see the
    # kernel's tests for the guard that keeps transformers' check_imports passing without it.
    optional = {"triton"}
    problems = []
    for path in sorted(MODEL_DIR.glob("*.py")):
        for line, module, level in _imported_modules(path):
            top = module.split(".")[0]
            if level == 1 and top in siblings:
                continue
            if level == 0 and (top in allowed or (top in optional and path.name == "rank_attention_triton.py")):
                continue
            problems.append(f"{path.name}:{line} imports {'.' * level}{module}")
    assert not problems, "Hub-bound files may import only the standard library, torch, transformers and each " \
                         "other:\n" + "\n".join(problems)


def test_the_model_folder_holds_exactly_what_save_pretrained_copies(tmp_path):
    config = liteasr_hf.LiteWhisperConfig(d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                                          decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                                          vocab_size=64, max_source_positions=16, max_target_positions=16,
                                          pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=3,
                                          low_rank_config=[{"fc1": 8}])
    folder = save_model_folder(liteasr_hf.LiteWhisperForConditionalGeneration(config), tmp_path / "saved")
    copied = {p.name for p in folder.glob("*.py")}
    assert copied == {p.name for p in MODEL_DIR.iterdir() if p.name != "__pycache__"}
    assert copied == {"configuration_lite_whisper.py", "modeling_lite_whisper.py", "pipeline_lite_whisper.py",
                      "rank_attention_triton.py"}
    for name in copied:  # the copies are the package's files, byte for byte
        assert (folder / name).read_bytes() == (MODEL_DIR / name).read_bytes(), name


OLD_RELEASE = BLOCK_LITEASR_HF + textwrap.dedent(
    """
    import sys
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoModel, AutoModelForSpeechSeq2Seq
    path, expected, out = sys.argv[1:4]
    inputs = load_file(expected)
    s2s = AutoModelForSpeechSeq2Seq.from_pretrained(path, trust_remote_code=True).eval()
    bare = AutoModel.from_pretrained(path, trust_remote_code=True).eval()
    with torch.no_grad():
        logits = s2s(input_features=inputs["input_features"], decoder_input_ids=inputs["decoder_input_ids"]).logits
        generated = s2s.generate(inputs["input_features"], max_new_tokens=5, do_sample=False)
    assert type(s2s).__name__ == "LiteWhisperForConditionalGeneration", type(s2s)
    assert type(bare).__name__ == "LiteWhisperModel", type(bare)
    assert not any(m.split(".")[0] == "liteasr_hf" for m in sys.modules)
    save_file({"logits": logits, "generated": generated}, out)
    """
)


@pytest.mark.skipif(transformers.__version__.startswith("4."),
                    reason="the folder carries the code of a release that needed transformers 5")
def test_folder_saved_before_the_layout_change_loads_with_its_own_remote_code(tmp_path):
    out = tmp_path / "outputs.safetensors"
    run = subprocess.run([sys.executable, "-c", OLD_RELEASE, str(OLD_FOLDER / "model"),
                          str(OLD_FOLDER / "expected.safetensors"), str(out)],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    got, expected = load_file(out), load_file(OLD_FOLDER / "expected.safetensors")
    torch.testing.assert_close(got["logits"], expected["logits"], rtol=1e-5, atol=1e-6)  # CPU kernels differ by machine
    assert torch.equal(got["generated"], expected["generated"])


def test_folder_saved_before_the_layout_change_loads_with_our_classes():
    expected = load_file(OLD_FOLDER / "expected.safetensors")
    config = json.loads((OLD_FOLDER / "model" / "config.json").read_text())
    assert config["auto_map"]["AutoModelForSpeechSeq2Seq"] == "modeling_lite_whisper.LiteWhisperForConditionalGeneration"
    model = AutoModelForSpeechSeq2Seq.from_pretrained(OLD_FOLDER / "model").eval()
    assert type(model) is liteasr_hf.LiteWhisperForConditionalGeneration  # ours, registered on import
    # With liteasr_hf imported, AutoModel gives the model that generates, whatever an older auto_map says.
    assert isinstance(AutoModel.from_pretrained(OLD_FOLDER / "model"), liteasr_hf.LiteWhisperForConditionalGeneration)
    with torch.no_grad():
        logits = model(input_features=expected["input_features"], decoder_input_ids=expected["decoder_input_ids"]).logits
        generated = model.generate(expected["input_features"], max_new_tokens=5, do_sample=False)
    torch.testing.assert_close(logits, expected["logits"], rtol=1e-5, atol=1e-6)  # CPU kernels differ by machine
    assert torch.equal(generated, expected["generated"])


@pytest.mark.parametrize("name", sorted(liteasr_hf._TOOLS))
def test_top_level_names_resolve_to_their_sub_package(name):
    value = getattr(liteasr_hf, name)
    assert value is getattr(__import__(f"liteasr_hf.{liteasr_hf._TOOLS[name]}", fromlist=[name]), name)
    assert name in dir(liteasr_hf) and name in liteasr_hf.__all__


def test_unknown_top_level_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'compress_chekpoint'"):
        liteasr_hf.compress_chekpoint  # noqa: B018


def test_importing_the_package_loads_only_the_model_code_and_each_sub_package_imports_on_its_own():
    # Each in a fresh interpreter, so that an import cycle cannot hide behind an import order.
    scripts = {"liteasr_hf": "import liteasr_hf, sys; print(sorted(m for m in sys.modules if m.startswith('liteasr_hf')))"}
    scripts.update({p: f"import liteasr_hf.{p}" for p in SUB_PACKAGES})
    runs = {name: subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True) for name, code in scripts.items()}
    results = {name: (proc.communicate(timeout=600), proc.returncode) for name, proc in runs.items()}
    for name, ((_, err), code) in results.items():
        assert code == 0, f"import {name} failed:\n{err[-2000:]}"
    loaded = ast.literal_eval(results["liteasr_hf"][0][0].strip())
    assert {m.split(".")[1] for m in loaded if "." in m} == {"models"}, loaded
