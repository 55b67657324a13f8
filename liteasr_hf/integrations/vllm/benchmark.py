"""A served model's throughput and latency: concurrent requests to ``/v1/audio/transcriptions``.

Each request sends one utterance as a WAV file, as an OpenAI client does. Throughput is audio seconds transcribed
per wall-clock second over the whole run (the Open ASR Leaderboard's RTFx, measured at the client); latency is
per request, from sending to the full answer. One untimed request warms the server up first.
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import numpy as np
import soundfile as sf
from tqdm.auto import tqdm

from ...data.speech import Utterance

SAMPLE_RATE = 16_000


def wav_bytes(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """``audio`` (float32 mono) as a WAV file in float samples, so the server decodes exactly these values."""
    buffer = io.BytesIO()
    sf.write(buffer, audio, sample_rate, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def served_model(client: httpx.Client, url: str) -> str:
    """The id of the one model a vLLM server serves (``/v1/models``)."""
    response = client.get(f"{url}/v1/models")
    response.raise_for_status()
    return response.json()["data"][0]["id"]


def transcribe_request(client: httpx.Client, url: str, audio: np.ndarray | bytes, *, model: str,
                       language: str | None = "en", filename: str = "audio.wav") -> httpx.Response:
    """POST one audio file to ``url``'s ``/v1/audio/transcriptions`` (greedy: temperature 0); returns the response."""
    data = {"model": model, "temperature": "0", "response_format": "json"}
    if language:
        data["language"] = language
    payload = audio if isinstance(audio, bytes) else wav_bytes(audio)
    return client.post(f"{url}/v1/audio/transcriptions", data=data,
                       files={"file": (filename, payload, "audio/wav")})


@dataclass
class ServingResult:
    """One benchmark run against one server."""

    model: str
    requests: int
    concurrency: int
    audio_seconds: float
    wall_seconds: float
    latencies: list[float]  # seconds, in request order
    texts: list[str]

    @property
    def audio_seconds_per_second(self) -> float:
        return self.audio_seconds / self.wall_seconds

    def latency_percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q))

    def summary(self) -> dict:
        return {"model": self.model, "requests": self.requests, "concurrency": self.concurrency,
                "audio_seconds": round(self.audio_seconds, 2), "wall_seconds": round(self.wall_seconds, 3),
                "audio_seconds_per_second": round(self.audio_seconds_per_second, 3),
                **{f"latency_p{q}_s": round(self.latency_percentile(q), 3) for q in (50, 90, 99)}}


def run_serving_benchmark(url: str, utterances: Sequence[Utterance], *, requests: int, concurrency: int,
                          language: str | None = "en", timeout: float = 600.0,
                          progress: bool = True) -> ServingResult:
    """Send ``requests`` transcription requests (cycling through ``utterances``), ``concurrency`` at a time."""
    if not utterances:
        raise ValueError("The benchmark needs at least one utterance.")
    if requests < 1 or concurrency < 1:
        raise ValueError(f"requests ({requests}) and concurrency ({concurrency}) must be at least 1.")
    chosen = [utterances[i % len(utterances)] for i in range(requests)]
    payloads = [wav_bytes(u.audio) for u in chosen]
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(timeout=timeout, limits=limits) as client:
        model = served_model(client, url)

        def one(payload: bytes) -> tuple[float, str]:
            start = time.perf_counter()
            response = transcribe_request(client, url, payload, model=model, language=language)
            response.raise_for_status()
            return time.perf_counter() - start, response.json()["text"]

        one(payloads[0])  # warm-up, untimed
        bar = tqdm(total=requests, desc=f"requests to {model}", unit="req", disable=not progress)
        start = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            futures = [pool.submit(one, payload) for payload in payloads]
            for future in futures:
                future.add_done_callback(lambda _: bar.update())
            answers = [future.result() for future in futures]
        wall = time.perf_counter() - start
        bar.close()
    return ServingResult(model=model, requests=requests, concurrency=concurrency,
                         audio_seconds=sum(u.duration for u in chosen), wall_seconds=wall,
                         latencies=[latency for latency, _ in answers], texts=[text for _, text in answers])


def format_serving_table(results: Sequence[ServingResult], labels: Sequence[str]) -> str:
    """A Markdown table of several runs, with each model's throughput relative to the first."""
    first = results[0].audio_seconds_per_second
    lines = ["| model | requests | concurrency | audio s / s | vs first | p50 latency (s) | p90 (s) | p99 (s) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for label, result in zip(labels, results):
        lines.append(f"| {label} | {result.requests} | {result.concurrency} | {result.audio_seconds_per_second:.2f} "
                     f"| {result.audio_seconds_per_second / first:.2f}x | {result.latency_percentile(50):.2f} "
                     f"| {result.latency_percentile(90):.2f} | {result.latency_percentile(99):.2f} |")
    return "\n".join(lines)


def answer_word_error_rates(utterances: Sequence[Utterance], texts: Sequence[str], normalizer=None) -> dict:
    """Corpus WER of a server's answers (``wer``, ``wer_utterances``) and, where the utterances carry speaker
    groups, per group (``wer_groups``); empty when an utterance has no reference text."""
    from ...evaluation.transcription import english_normalizer, group_word_error_rates, score

    if not utterances or any(u.text is None for u in utterances):
        return {}
    if normalizer is None:
        normalizer, _ = english_normalizer()
    pairs, stats = score([u.text for u in utterances], list(texts), normalizer)
    result: dict = {"wer": stats.wer, "wer_utterances": len(utterances)}
    groups = group_word_error_rates([u.group for u in utterances], pairs)
    if groups:
        result["wer_groups"] = {g: w.wer for g, w in groups.items()}
    return result


def benchmark_served_models(
    models: Sequence[tuple[str, str]],
    utterances: Sequence[Utterance],
    *,
    requests: int,
    concurrency: int,
    rounds: int = 1,
    server_args: Sequence[str] = (),
    server_env: dict[str, str] | None = None,
    language: str | None = "en",
    progress: bool = True,
) -> dict:
    """Serve each ``(label, model)`` in turn on 127.0.0.1 and benchmark it; ``rounds`` > 1 repeats the whole
    sequence (A B A B: a slow spell on a shared machine then falls on every model) and keeps each model's best
    round. Returns a report: per model its best run's summary, every round's throughput, and the corpus WER of its
    answers (the first answer for each utterance sent) when the utterances carry text, per speaker group too when
    they carry groups."""
    from ...evaluation.transcription import english_normalizer
    from .server import vllm_server

    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}.")
    runs: dict[str, list[ServingResult]] = {label: [] for label, _ in models}
    for _ in range(rounds):
        for label, model in models:
            with vllm_server(model, server_args, env=server_env) as url:
                runs[label].append(run_serving_benchmark(url, utterances, requests=requests, concurrency=concurrency,
                                                         language=language, progress=progress))
    normalizer, _ = english_normalizer()
    report = {"requests": requests, "concurrency": concurrency, "rounds": rounds, "server_args": list(server_args),
              "server_env": dict(server_env or {}), "utterances": len(utterances),
              "audio_seconds": round(sum(u.duration for u in utterances), 2), "models": []}
    for label, model in models:
        best = max(runs[label], key=lambda r: r.audio_seconds_per_second)
        entry = {"label": label, "model": str(model), **best.summary(),
                 "rounds_audio_seconds_per_second": [round(r.audio_seconds_per_second, 3) for r in runs[label]]}
        answered = utterances[: min(len(utterances), best.requests)]  # the first answer for each
        entry.update(answer_word_error_rates(answered, best.texts[: len(answered)], normalizer))
        report["models"].append(entry)
    report["table"] = format_serving_table([max(runs[label], key=lambda r: r.audio_seconds_per_second)
                                            for label, _ in models], [label for label, _ in models])
    return report
