"""Check a staged folder as a user of the Hub repo would load it: with ``trust_remote_code``, offline, in a clean
Python process in which ``liteasr_hf`` cannot be imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

#: First lines of a script that runs as a Hub user's process would: ``liteasr_hf`` cannot be imported, so a model
#: loads only with the code files beside its weights.
BLOCK_LITEASR_HF = textwrap.dedent(
    """
    import importlib.abc, sys

    class BlockPackage(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "liteasr_hf" or name.startswith("liteasr_hf."):
                raise ImportError("liteasr_hf is blocked: the model must load with its own code files")

    sys.meta_path.insert(0, BlockPackage())
    """
)

_CHECK_SCRIPT = BLOCK_LITEASR_HF + textwrap.dedent(
    """
    import json
    import numpy as np
    import torch
    from transformers import AutoConfig, AutoModelForSpeechSeq2Seq, AutoProcessor
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    folder = sys.argv[1]
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    model, info = AutoModelForSpeechSeq2Seq.from_pretrained(folder, trust_remote_code=True, output_loading_info=True)
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    bare = get_class_from_dynamic_module(config.auto_map["AutoModel"], folder)
    pipeline = get_class_from_dynamic_module(config.custom_pipelines["automatic-speech-recognition"]["impl"], folder)
    features = processor(np.zeros(16000, dtype=np.float32), sampling_rate=16000, return_tensors="pt").input_features
    start = torch.tensor([[model.config.decoder_start_token_id]])
    with torch.inference_mode():
        logits = model.eval()(input_features=features.to(model.dtype), decoder_input_ids=start).logits
    print(json.dumps({
        "config": type(config).__name__, "model": type(model).__name__, "auto_model": bare.__name__,
        "pipeline": pipeline.__name__, "processor": type(processor).__name__,
        "problems": {k: sorted(map(str, v)) for k, v in info.items() if v},
        "finite": bool(torch.isfinite(logits).all()),
        "liteasr_hf_imported": any(m.split(".")[0] == "liteasr_hf" for m in sys.modules),
    }))
    """
)


def check_staged_folder(folder: str | os.PathLike, timeout: float = 1800) -> dict:
    """Load ``folder`` as a Hub user would, in a fresh Python process that cannot import ``liteasr_hf``, offline:
    config, model (every weight matched), processor, the ``AutoModel`` and pipeline classes, and one forward pass.

    Returns what was loaded; raises ``ValueError`` with the subprocess's error when anything fails.
    """
    folder = Path(folder).resolve()
    with tempfile.TemporaryDirectory(prefix="liteasr-check-") as home:
        env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
        # Own HF_HOME: remote code is imported into an empty modules cache; offline: the folder alone must do.
        env.update(HF_HOME=home, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        try:
            result = subprocess.run([sys.executable, "-c", _CHECK_SCRIPT, str(folder)], cwd=home, env=env,
                                    capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as err:
            raise ValueError(f"Loading {folder} in a clean process took more than {timeout:.0f} s.") from err
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-15:])
        raise ValueError(f"The staged folder {folder} does not load with trust_remote_code in a clean Python process "
                         f"(without liteasr_hf):\n{tail}")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    problems = []
    if report["model"] != "LiteWhisperForConditionalGeneration" or report["auto_model"] != report["model"]:
        problems.append(f"it loads as {report['model']} (AutoModel: {report['auto_model']}), not "
                        "LiteWhisperForConditionalGeneration")
    if report["problems"]:
        problems.append(f"weights do not match the config: {report['problems']}")
    if not report["finite"]:
        problems.append("a forward pass gives non-finite logits")
    if report["liteasr_hf_imported"]:
        problems.append("liteasr_hf was imported")
    if problems:
        raise ValueError(f"The staged folder {folder} loads, but " + "; ".join(problems) + ".")
    return report
