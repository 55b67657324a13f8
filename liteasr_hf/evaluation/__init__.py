"""How good and how fast: WER and RTFx of transcriptions, encoder and end-to-end benchmarks, the Pareto plot."""

from .benchmark import run_benchmark
from .summary import EvaluationSummary
from .transcription import compare_models, evaluate_model, score

__all__ = ["EvaluationSummary", "compare_models", "evaluate_model", "run_benchmark", "score"]
