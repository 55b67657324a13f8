"""Benchmark and Pareto plot: rows and ratios on tiny random models, a real run with tiny.en, the plot."""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path

import pytest
import torch
from transformers import WhisperConfig, WhisperForConditionalGeneration

from liteasr_hf import LiteWhisperConfig, LiteWhisperForConditionalGeneration
from liteasr_hf.compression.cost import encoder_cost
from liteasr_hf.data.speech import load_speech
from liteasr_hf.data.suite import EVALUATION_MANIFEST
from liteasr_hf.evaluation.benchmark import (
    EncoderRow,
    benchmark_encoders,
    encoder_latency,
    format_table,
    forward_peak_bytes,
    run_benchmark,
)
from liteasr_hf.evaluation.pareto import (
    ParetoPoint, load_points, pareto_front, plot_from_files, plot_wer_against_size, size_points,
)
from liteasr_hf.evaluation.summary import EvaluationSummary, GroupWer
from liteasr_hf.evaluation.synthetic_models import (
    parse_spec,
    proportional_low_rank_config,
    shape_config,
    synthetic_model,
)
from liteasr_hf.evaluation.transcription import evaluate_utterances

ROOT = Path(__file__).resolve().parents[1]
SPEECH = ROOT / "data" / "speech"
SMALL = dict(d_model=64, encoder_layers=2, decoder_layers=1, encoder_attention_heads=4, decoder_attention_heads=4,
             encoder_ffn_dim=128, decoder_ffn_dim=128, vocab_size=120, num_mel_bins=80, max_source_positions=1500,
             max_target_positions=48, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=3)
RANKS = [{"q_proj": 8, "k_proj": 8, "v_proj": 8, "fc1": 16, "fc2": 16}, {"fc1": 16, "out_proj": 16}]


def dense_and_lite() -> tuple[WhisperForConditionalGeneration, LiteWhisperForConditionalGeneration]:
    torch.manual_seed(0)
    dense = WhisperForConditionalGeneration(WhisperConfig(**SMALL)).eval()
    lite = LiteWhisperForConditionalGeneration(LiteWhisperConfig.from_whisper_config(dense.config, RANKS)).eval()
    return dense, lite



def load_script(name: str):
    """The ``liteasr`` sub-command's module (``scripts/<name>.py`` runs its ``main``)."""
    return importlib.import_module(f"liteasr_hf.cli.{name}")


# --- encoder benchmark on tiny random models ------------------------------------------------------------


def test_encoder_rows_carry_flops_times_and_memory(one_thread):
    dense, lite = dense_and_lite()
    rows = benchmark_encoders({"dense": dense, "lite": lite}, batch_sizes=(1, 2), repeats=1, warmup=1)
    assert [(r.model, r.batch_size) for r in rows] == [("dense", 1), ("lite", 1), ("dense", 2), ("lite", 2)]
    reduction = encoder_cost(dense.config).flops / encoder_cost(lite.config).flops
    assert reduction > 1
    for r in rows:
        reference = r.model == "dense"
        assert r.flop_reduction == pytest.approx(1.0 if reference else reduction, rel=1e-12)
        assert r.encoder_gflops == encoder_cost((dense if reference else lite).config).flops / 1e9
        assert r.encoder_params == sum(p.numel() for p in (dense if reference else lite).get_encoder().parameters())
        assert r.latency_ms > 0 and r.latency_min_ms == r.latency_ms and r.latency_iqr_ms == 0
        assert r.throughput == pytest.approx(r.batch_size * 30 / (r.latency_ms / 1000))
        assert r.speedup_per_flop_reduction == pytest.approx(r.speedup / r.flop_reduction)
        assert r.peak_memory_mb > r.weights_mb > 0 and r.compile_seconds is None and r.repeats == 1
        if reference:
            assert r.speedup == 1.0
    ref1, lite1, ref2, lite2 = rows
    assert lite1.speedup == pytest.approx(ref1.latency_ms / lite1.latency_ms)
    assert lite1.weights_mb < ref1.weights_mb
    assert ref2.peak_memory_mb - ref2.weights_mb > 1.5 * (ref1.peak_memory_mb - ref1.weights_mb)  # activations grow

    report = {"reference": "dense", "encoder": [dataclasses.asdict(r) for r in rows], "end_to_end": [],
              "settings": {"device": "cpu", "threads": 1, "dtype": "float32", "repeats": 1, "warmup": 1},
              "machine": {"cpu": "test"}}
    table = format_table(report).splitlines()
    assert [c.strip() for c in table[1].split("|")[1:-1]] == [
        "model", "batch", "params M", "GFLOPs", "FLOP red.", "latency ms (IQR)", "speed-up", "speed-up / FLOP red.",
        "audio s/s", "peak MB"]
    cells = [c.strip() for c in table[4].split("|")[1:-1]]
    positions = lite.config.max_source_positions * lite.config.d_model  # left out, as the published tables do
    assert cells[:5] == ["lite", "1", f"{(lite1.encoder_params - positions) / 1e6:.2f}", f"{lite1.encoder_gflops:.2f}",
                         f"{reduction:.2f}x"]
    assert table[7].startswith("Lowest speed-up / FLOP reduction:")

    assert all(t > 0 for t in encoder_latency([dense, lite], repeats=1))  # the helper compress_checkpoint uses


def test_peak_memory_sees_the_activations(one_thread):
    layer = torch.nn.Linear(256, 1024)
    x = torch.randn(4, 100, 256)
    assert forward_peak_bytes(layer, x) >= 4 * 100 * 1024 * 4  # the output, float32


def test_compiled_encoder_is_timed_apart_from_its_compilation(one_thread):
    _, lite = dense_and_lite()
    features = torch.randn(1, 80, 3000)
    with torch.no_grad():
        expected = lite.get_encoder()(features).last_hidden_state
    (row,) = benchmark_encoders({"lite": lite}, batch_sizes=(1,), repeats=1, compile=True, measure_memory=False)
    assert row.compile_seconds > row.latency_ms / 1000 and row.peak_memory_mb is None
    with torch.no_grad():  # compiled in place: later calls (generate too) use the compiled encoder
        got = lite.get_encoder()(features).last_hidden_state
    assert lite.get_encoder()._compiled_call_impl is not None
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_bad_models_are_named():
    with pytest.raises(OSError, match="no-such-model"):
        run_benchmark([str(ROOT / "no-such-model")], e2e_clips=0, log=None)
    with pytest.raises(ValueError, match="named more than once: base"):
        run_benchmark(["base", "base"], log=None)
    dense, _ = dense_and_lite()
    with pytest.raises(ValueError, match="at least 1"):
        benchmark_encoders({"dense": dense}, batch_sizes=(0,))


# --- a real run: the script on tiny.en, end to end on real clips ----------------------------------------------


@pytest.fixture(scope="module")
def report_path(tiny_en_dir, tmp_path_factory) -> Path:
    threads = torch.get_num_threads()
    output = tmp_path_factory.mktemp("bench") / "report.json"
    try:
        code = load_script("benchmark").main([
            "--models", str(tiny_en_dir), "--batch-sizes", "1", "--repeats", "1", "--threads", "1",
            "--e2e-clips", "2", "--e2e-batch-size", "2", "--e2e-repeats", "1", "--output", str(output)])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    return output


def test_script_writes_a_report_with_end_to_end_times(report_path, tiny_en_dir):
    report = json.loads(report_path.read_text())
    assert report["reference"] == str(tiny_en_dir)
    assert report["models"][0]["model_path"] == str(Path(tiny_en_dir).resolve())
    assert report["models"][0]["encoder_flops"] == encoder_cost(WhisperConfig.from_pretrained(tiny_en_dir)).flops
    assert report["settings"]["threads"] == 1 and report["settings"]["dtype"] == "float32"
    (row,) = report["encoder"]
    assert set(row) == {f.name for f in dataclasses.fields(EncoderRow)}
    assert row["encoder_params"] == 8_208_384 and row["speedup"] == 1.0
    assert row["peak_memory_mb"] > row["weights_mb"] == pytest.approx(8_208_384 * 4 / 2**20)
    (e2e,) = report["end_to_end"]
    # by default the first clips of the evaluation manifest: real speakers come first
    assert report["settings"]["e2e_data"] == "data/evaluation.jsonl"  # shipped speech, as any machine finds it
    utterances, _ = load_speech(EVALUATION_MANIFEST, split="evaluation", max_samples=2)
    assert all(u.group.startswith("real") for u in utterances)
    assert e2e["n_clips"] == 2 and e2e["audio_seconds"] == pytest.approx(sum(u.duration for u in utterances))
    assert e2e["rtfx"] == pytest.approx(e2e["audio_seconds"] / e2e["seconds"])


def test_script_reports_bad_input(tmp_path, capsys):
    code = load_script("benchmark").main(["--models", str(tmp_path / "nowhere"), "--output", str(tmp_path / "r.json")])
    assert code == 2 and "nowhere" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


# --- Pareto plot ----------------------------------------------------------------------------------------------


def test_pareto_front_keeps_the_undominated_points():
    pts = [ParetoPoint(n, n, wer, params, 0.0, True)
           for n, wer, params in [("a", 20, 8), ("b", 17, 20), ("c", 16, 17), ("d", 19, 15), ("e", 22, 13)]]
    front = pareto_front(pts, lambda p: p.encoder_params)
    assert [p.label for p in front] == ["a", "d", "c"]  # e is beaten by a, b by c


@pytest.fixture
def summaries_and_report(report_path, tiny_en_dir, tmp_path, one_thread):
    """A real summary of tiny.en on 2 clips, three more models derived from it, and the benchmark report with
    timings for all four (the three others scaled from tiny.en's)."""
    utterances, failures = load_speech(SPEECH, split="evaluation", max_samples=2)
    real = evaluate_utterances(tiny_en_dir, utterances, failures, data=str(SPEECH), split="evaluation",
                               batch_size=2, output=tmp_path / "results", progress=False)
    report = json.loads(report_path.read_text())
    row = report["encoder"][0]
    variants = [("whisper-base", "whisper", real.wer - 5, 20_590_592, 2.5),
                ("lite-whisper-base", "lite-whisper", real.wer - 4, 15_000_000, 1.8),
                ("lite-whisper-bad", "lite-whisper", real.wer + 10, 18_000_000, 2.2)]
    paths = [next((tmp_path / "results").glob("*.summary.json"))]
    for name, model_type, wer, params, slower in variants:
        folder = str(tmp_path / name)
        summary = dataclasses.replace(real, model=folder, model_path=folder, model_type=model_type, wer=wer,
                                      encoder_params=params + 1_000, encoder_params_excluding_positions=params)
        paths.append(tmp_path / f"{name}.summary.json")
        paths[-1].write_text(summary.to_json())
        report["models"].append({"model": folder, "model_path": folder, "model_type": model_type})
        report["encoder"].append({**row, "model": folder, "latency_ms": row["latency_ms"] * slower})
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps(report))
    return paths, bench


def test_pareto_plot_draws_every_model(summaries_and_report, tmp_path):
    paths, bench = summaries_and_report
    fig, points = plot_from_files(paths, bench, tmp_path / "plots" / "pareto.png")
    assert (tmp_path / "plots" / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.label for p in points) == ["lite-whisper-bad", "lite-whisper-base", "whisper-base",
                                               "whisper-tiny.en"]
    assert sum(p.lite for p in points) == 2
    panels = fig.axes
    assert len(panels) == 2
    for ax in panels:
        assert sum(len(c.get_offsets()) for c in ax.collections) == 4  # two marker groups, four points
        assert len(ax.texts) == 4
    # tiny.en (smallest, fastest) then lite-whisper-base (better WER, smaller than base) then whisper-base.
    front = pareto_front(points, lambda p: p.encoder_params)
    assert [p.label for p in front] == ["whisper-tiny.en", "lite-whisper-base", "whisper-base"]
    assert list(panels[0].lines[0].get_xdata()) == [p.encoder_params / 1e6 for p in front]


def test_pareto_inputs_that_do_not_match_fail_clearly(summaries_and_report, tmp_path, capsys):
    paths, bench = summaries_and_report
    with pytest.raises(ValueError, match="No evaluation summary for the benchmarked model.*lite-whisper-bad"):
        load_points([p for p in paths if "bad" not in p.name], bench)
    report = json.loads(bench.read_text())
    report["models"] = [m for m in report["models"] if "whisper-base" not in m["model"]]
    with pytest.raises(ValueError, match=r"No benchmark timings .* for .*whisper-base"):
        load_points(paths, report)
    with pytest.raises(ValueError, match="no encoder timings at batch size 8"):
        load_points(paths, bench, batch_size=8)
    other = dataclasses.replace(EvaluationSummary.read(paths[1]), n_scored=165)
    with pytest.raises(ValueError, match="different evaluation data"):
        load_points([paths[0], other, *paths[2:]], bench)
    script = load_script("plot_pareto")
    assert script.main(["--summaries", str(paths[0]), "--benchmark", str(bench),
                        "--output", str(tmp_path / "x.png")]) == 2
    assert "No evaluation summary" in capsys.readouterr().err and not (tmp_path / "x.png").exists()


def _grouped_summary(model: str, params: int, native: tuple[int, int], child: tuple[int, int]) -> EvaluationSummary:
    """A summary of ``model`` with (errors, words) for two real groups and a synthetic one."""
    groups = {name: GroupWer(wer=round(100 * e / w, 2), errors=e, reference_words=w, utterances=3, long_outputs=0)
              for name, (e, w) in (("real native adult", native), ("real non-native child", child),
                                   ("synthetic", (1, 100)))}
    errors, words = sum(g.errors for g in groups.values()), sum(g.reference_words for g in groups.values())
    return EvaluationSummary(model=model, model_path=model, model_type="lite-whisper", data="data/evaluation.jsonl",
                             split="evaluation", wer=round(100 * errors / words, 2), errors=errors,
                             reference_words=words, n_scored=9, groups=groups, encoder_params=params + 1_000,
                             encoder_params_excluding_positions=params)


def test_wer_against_size_sets_recipes_side_by_side(tmp_path, capsys):
    files = {"whisper-base": _grouped_summary("base", 19_822_592, (6, 100), (30, 100)),
             "base-paper-64__evaluation-evaluation": _grouped_summary("/x/base-paper-64", 12_400_000, (40, 100), (90, 300)),
             "base-fast": _grouped_summary("/x/base-fast-sens-healed", 12_403_712, (15, 100), (45, 300))}
    paths = {}
    for name, summary in files.items():
        paths[name] = tmp_path / f"{name}.summary.json"
        paths[name].write_text(summary.to_json())
    # real speakers pooled: errors over words of both real groups, the synthetic voices left out
    assert files["base-fast"].pooled_wer() == 15.0 and files["base-paper-64__evaluation-evaluation"].pooled_wer() == 32.5
    series = {"Whisper": [paths["whisper-base"]], "paper's recipe": [paths["base-paper-64__evaluation-evaluation"]],
              "ours, healed": [paths["base-fast"]]}
    points = size_points(series)
    assert [(p.series, p.label, p.wer, p.encoder_params) for p in points] == [
        ("Whisper", "whisper-base", 18.0, 19_822_592), ("paper's recipe", "base-paper-64", 32.5, 12_400_000),
        ("ours, healed", "base-fast", 15.0, 12_403_712)]
    assert [p.wer for p in size_points(series, speech="all")] == [s.wer for s in files.values()]
    fig = plot_wer_against_size(points, tmp_path / "plots" / "size.png")
    assert (tmp_path / "plots" / "size.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (ax,) = fig.axes
    assert [len(c.get_offsets()) for c in ax.collections] == [1, 1, 1] and len(ax.texts) == 3
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(series)

    # a summary without speaker groups, one model twice, other data: refused, naming it
    ungrouped = dataclasses.replace(files["base-fast"], groups={})
    with pytest.raises(ValueError, match="no speaker group beginning 'real'.*evaluate on the shipped evaluation"):
        size_points({"ours": [ungrouped]})
    with pytest.raises(ValueError, match="base-fast is given twice"):
        size_points({"a": [paths["base-fast"]], "b": [paths["base-fast"]]})
    with pytest.raises(ValueError, match="different evaluation data"):
        size_points({"a": [paths["base-fast"]], "b": [dataclasses.replace(files["whisper-base"], n_scored=3)]})

    script = load_script("plot_size")
    out = tmp_path / "cli.png"
    assert script.main(["--series", "Whisper", str(paths["whisper-base"]), "--series", "ours, healed",
                        str(paths["base-fast"]), "--output", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG" and "base-fast" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        script.main(["--series", "Whisper", "--output", str(out)])
    assert exit_.value.code == 2 and "names no summary" in capsys.readouterr().err


def test_attention_path_sweep_sets_the_cost_models_choice_beside_the_timings():
    from liteasr_hf.evaluation.benchmark import benchmark_attention_paths, format_attention_paths

    rows = benchmark_attention_paths(d_model=64, num_heads=4, tokens=60, ranks=(8, 32), batch_sizes=(1, 2), repeats=1)
    assert [(r.rank, r.batch_size) for r in rows] == [(8, 1), (8, 2), (32, 1), (32, 2)]
    for row in rows:
        assert row.full_ms > 0 and row.rank_space_ms > 0
        assert row.measured_speedup == pytest.approx(row.full_ms / row.rank_space_ms)
        assert row.faster in ("full", "rank_space")
    # head size 16: rank 8 halves the attention products, rank 32 doubles them
    assert rows[0].chosen == "rank_space" and rows[0].flop_ratio > 1
    assert rows[2].chosen == "full" and rows[2].flop_ratio < 1
    table = format_attention_paths(rows)
    assert table.count("\n") == len(rows) + 1 and "auto picks" in table


# --- random-weight models with real shapes -------------------------------------------------------------------


@pytest.mark.parametrize("spec, keep, attention", [
    ("shape:large-v3@large-v3", 0.65, None),
    ("shape:large-v3-turbo@large-v3-turbo-fast", 0.55, None),
    ("shape:medium@0.5", 0.5, None),
    ("shape:large-v3@0.55,attention=48", 0.55, 48),
])
def test_proportional_ranks_meet_the_preset_size(spec, keep, attention):
    parsed = parse_spec(spec)
    assert (parsed.keep, parsed.attention_rank, parsed.fused_kernel) == (keep, attention, True)
    config = shape_config(parsed.size)
    ranks = proportional_low_rank_config(config, keep, attention_rank=attention)
    kept = encoder_cost(config, ranks).params / encoder_cost(config, []).params
    assert keep - 0.03 < kept <= keep  # as close as 16-multiples of rank allow, never over
    assert len(ranks) == config.encoder_layers and all(r == ranks[0] for r in ranks)
    if attention:
        assert {ranks[0][m] for m in ("q_proj", "k_proj", "v_proj")} == {attention}


@pytest.mark.parametrize("spec, message", [
    ("shape:huge", "unknown Whisper size 'huge'"),
    ("large-v3", "write shape:SIZE"),
    ("shape:base@paper", "preset 'paper' sets no budget"),
    ("shape:base@no-such-preset", "no-such-preset"),
    ("shape:base@0.01", "even the smallest ranks keep"),
    ("shape:base@1.5", "keep = 1.5"),
    ("shape:base@0.8,attention=600", "attention=600"),
    ("shape:base,kernel=off", "give a size after '@'"),
    ("shape:base@0.8,kernel=maybe", "write shape:SIZE"),
])
def test_bad_shape_specs_are_named(spec, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        parsed = parse_spec(spec)
        proportional_low_rank_config(shape_config(parsed.size), parsed.keep, attention_rank=parsed.attention_rank)


def test_benchmark_times_random_weight_models_with_real_shapes(tmp_path):
    report = run_benchmark(["shape:tiny", "shape:tiny@0.6,attention=16"], batch_sizes=[1], repeats=1,
                           measure_memory=False, e2e_clips=0, output=tmp_path / "bench.json", log=None)
    dense, lite = report["models"]
    assert dense["random_weights"] and dense["model_type"] == "whisper" and lite["model_type"] == "lite-whisper"
    assert dense["d_model"] == 384 and dense["encoder_attention_heads"] == 6
    row = report["encoder"][1]
    assert row["flop_reduction"] > 1.5 and row["latency_ms"] > 0
    model = synthetic_model("shape:tiny@0.6,attention=16")
    assert set(model.get_encoder().attention_paths()) == {"rank_space"}  # the cost model takes it at rank 16
    assert all(layer.self_attn.use_fused_kernel for layer in model.get_encoder().layers)
    unfused = synthetic_model("shape:tiny@0.6,attention=16,kernel=off")
    assert not any(layer.self_attn.use_fused_kernel for layer in unfused.get_encoder().layers)
    with pytest.raises(ValueError, match="random-weight models have no tokenizer"):
        run_benchmark(["shape:tiny"], data=ROOT / "data" / "speech", e2e_clips=2, log=None)


def test_reports_record_the_cpu_features_that_decide_8_bit_kernels():
    from liteasr_hf.evaluation.reporting import CPU_FEATURES, machine_info
    from liteasr_hf.evaluation.results_tables import describe_machine

    info = machine_info(torch.device("cpu"))
    assert set(info["cpu_features"]) <= set(CPU_FEATURES)
    flags = open("/proc/cpuinfo", encoding="utf-8").read()
    assert ("avx2" in info["cpu_features"]) == (" avx2" in flags)
    cpu = {"cpu": "AMD EPYC", "cpu_count": 2}
    assert describe_machine({**cpu, "cpu_features": ["avx2", "avx512_vnni"]}) == "AMD EPYC (2 CPUs, VNNI)"
    assert describe_machine({**cpu, "cpu_features": ["avx2"]}) == "AMD EPYC (2 CPUs, AVX2 without VNNI)"
    assert describe_machine(cpu) == "AMD EPYC (2 CPUs)"  # a report from before the features were recorded
