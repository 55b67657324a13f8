"""liteasr-hf: LiteASR low-rank compression for Whisper in Hugging Face Transformers."""
