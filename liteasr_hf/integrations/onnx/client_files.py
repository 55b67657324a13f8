"""The files beside ``onnx/`` that ONNX Whisper clients read.

transformers.js reads ``config.json``, ``generation_config.json``, ``preprocessor_config.json``,
``tokenizer.json`` and ``tokenizer_config.json``. onnx-asr reads ``config.json`` (``num_mel_bins``) and the
vocabulary as ``vocab.json`` and ``added_tokens.json``, which transformers 5's ``save_pretrained`` no longer
writes: they are written here from the tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path

from ...checkpoints.saving import save_processor


def write_vocabulary(tokenizer, folder: Path) -> None:
    """``vocab.json`` (the byte-level BPE vocabulary) and ``added_tokens.json`` (special and timestamp tokens)."""
    added = tokenizer.get_added_vocab()
    vocab = {token: index for token, index in tokenizer.get_vocab().items() if token not in added}
    dump = {"indent": 2, "ensure_ascii": False, "sort_keys": False}
    (folder / "vocab.json").write_text(json.dumps(dict(sorted(vocab.items(), key=lambda kv: kv[1])), **dump) + "\n",
                                       encoding="utf-8")
    (folder / "added_tokens.json").write_text(
        json.dumps(dict(sorted(added.items(), key=lambda kv: kv[1])), **dump) + "\n", encoding="utf-8")


def write_client_files(model, processor, folder: Path, external_data: bool) -> None:
    """Config, generation config, processor and vocabulary files for ``folder``, the root above ``onnx/``."""
    model.config.save_pretrained(folder)
    if model.generation_config is not None:
        model.generation_config.save_pretrained(folder)
    save_processor(processor, folder)
    write_vocabulary(processor.tokenizer, folder)
    if external_data:
        # transformers.js loads `<file>.onnx_data` only when the config says the weights are external.
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        config.setdefault("transformers.js_config", {})["use_external_data_format"] = True
        (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
