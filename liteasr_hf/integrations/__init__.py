"""Runtimes outside PyTorch eager: each sub-package serves LiteWhisper (and stock Whisper) models to one of them."""
