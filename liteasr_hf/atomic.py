"""Write output folders atomically: a crash never leaves half a model or half a data set, and an output that is
replaced is never absent.

A folder is written under a hidden temporary name beside its target (``.NAME.<pid>.<random>.partial``) and renamed
into place when complete. Replacing an existing folder exchanges the two in one step on Linux
(``renameat2(RENAME_EXCHANGE)``); elsewhere the old folder is first renamed to ``.NAME.old``, and the next write
to the same target puts it back if a run died between the two renames. Each write also removes what earlier,
killed runs left beside the target (``.partial`` folders of processes that are gone, a stale ``.old``) and says
so with a warning.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

#: Set to a step's name (see :func:`fault_point`) to have the process SIGKILL itself there: how the fault suite
#: interrupts a save at a chosen point without relying on timing.
KILL_AT_ENV = "LITEASR_KILL_AT"
#: Set to 1 to replace folders with two renames even where an atomic exchange exists (tests the fallback).
NO_EXCHANGE_ENV = "LITEASR_NO_EXCHANGE"


def partial_name(target: Path) -> str:
    """The prefix of the temporary folders written for ``target`` (followed by ``<pid>.<random>.partial``)."""
    return f".{target.name}."


def old_name(target: Path) -> Path:
    """Where the fallback replacement parks the previous folder while the new one is renamed into place."""
    return target.with_name(f".{target.name}.old")


def check_distinct(output: str | os.PathLike, source: str | os.PathLike, what: str = "the model") -> None:
    """Refuse an ``output`` that is ``source``, contains it or lies inside it (symbolic links resolved), since
    writing it would replace or change ``source``. A ``source`` that is not a local path (a Hub id) passes."""
    source_path = Path(source)
    if not source_path.exists():
        return
    out, src = Path(output).resolve(), source_path.resolve()
    if out == src or out in src.parents:
        raise ValueError(f"The output {out} is {what}'s own folder {src}" + ("" if out == src else " or holds it")
                         + ": writing it would replace the source. Choose another --output.")
    if src in out.parents:
        raise ValueError(f"The output {out} lies inside {what}'s folder {src}: writing it would change the source. "
                         "Choose an --output outside it.")


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder next to ``path`` and move it to ``path`` when the block succeeds.

    The temporary folder lives in the same parent, so the final move is a rename on one file system. On any
    exception (``KeyboardInterrupt``, and SIGTERM while this runs in the main thread) it is removed and ``path``
    is untouched. A killed process (SIGKILL, power loss) leaves at most the hidden temporary folder, which the
    next write to ``path`` removes; with ``overwrite``, ``path`` is never absent, whenever the process dies.
    """
    target = Path(path).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(target)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists; pass overwrite=True (--overwrite) or choose another path.")
    tmp = Path(tempfile.mkdtemp(prefix=f"{partial_name(target)}{os.getpid()}.", suffix=".partial", dir=target.parent))
    try:
        with sigterm_raises():
            yield tmp
            _apply_umask(tmp)
            fault_point("written")
            if target.exists():
                _replace(tmp, target)
            else:
                os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def clean_leftovers(target: str | os.PathLike) -> list[str]:
    """Repair and remove what interrupted writes of ``target`` left beside it; returns (and warns) what was done.

    - ``.NAME.old`` with no ``NAME``: a replacement died between its two renames. The previous folder is put back.
    - ``.NAME.old`` beside ``NAME``: a replacement finished but died while deleting the previous folder.
    - ``.NAME.<pid>.*.partial`` of a process that no longer runs: an interrupted write (or, after an exchange, the
      previous folder not yet deleted). Those of running processes are left alone: they may be writing now.
    """
    target = Path(target).resolve()
    done = []
    old = old_name(target)
    if old.is_dir() and not old.is_symlink():
        if not target.exists():
            os.replace(old, target)
            done.append(f"restored {target} from {old.name}: an earlier run was interrupted while replacing it")
        else:
            shutil.rmtree(old, ignore_errors=True)
            done.append(f"removed {old}, left by an earlier run interrupted after replacing {target.name}")
    pattern = re.escape(partial_name(target)) + r"(\d+)\.[^.]+\.partial"
    done += _remove_dead_writers(target.parent, pattern)
    for message in done:
        warnings.warn(message, stacklevel=3)
    return done


def _replace(tmp: Path, target: Path) -> None:
    """Put ``tmp`` at ``target`` and delete the folder that was there, with ``target`` never absent."""
    if _exchange(tmp, target):
        fault_point("exchanged")
        shutil.rmtree(tmp, ignore_errors=True)  # now the previous folder
        return
    old = old_name(target)
    shutil.rmtree(old, ignore_errors=True)
    os.replace(target, old)
    fault_point("moved-aside")  # the one moment without `target`: the next write restores it from `old`
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with Linux's ``renameat2``; False where the system or file system cannot."""
    if sys.platform != "linux" or os.environ.get(NO_EXCHANGE_ENV) == "1":
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2  # glibc 2.28 and later
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EPERM):
        return False  # not supported by this kernel or file system: the caller falls back
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def _remove_dead_writers(folder: Path, pattern: str) -> list[str]:
    """Remove the folders in ``folder`` whose whole name matches ``pattern`` (group 1: the writer's process id) and
    whose writer no longer runs; returns what was removed, as messages."""
    removed = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        match = re.fullmatch(pattern, entry.name)
        if match and entry.is_dir() and not entry.is_symlink() and not process_alive(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(f"removed {entry}, left by an interrupted run (process {match.group(1)})")
    return removed


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (someone else's counts)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@contextlib.contextmanager
def scratch_directory(name: str) -> Iterator[Path]:
    """A temporary folder in the system's temporary folder, ``liteasr-<name>-<pid>-<random>``, removed when the block
    ends. Those that killed processes left (SIGKILL skips every cleanup) are removed first, with a warning."""
    for message in _remove_dead_writers(Path(tempfile.gettempdir()), rf"liteasr-{re.escape(name)}-(\d+)-[^/]+"):
        warnings.warn(message, stacklevel=3)
    with tempfile.TemporaryDirectory(prefix=f"liteasr-{name}-{os.getpid()}-") as folder:
        yield Path(folder)


def fault_point(step: str) -> None:
    """Die here, as a SIGKILL would, when ``$LITEASR_KILL_AT`` names this step (fault-injection tests only)."""
    if os.environ.get(KILL_AT_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


class _Terminated(SystemExit):
    pass


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """While the block runs, SIGTERM raises SystemExit(143) so that cleanup runs (a temporary folder removed, a
    server stopped), where Python's default would end the process at once. Only in the main thread and only where
    no one else has installed a handler."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def terminate(signum, frame):
        raise _Terminated(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's file is private (0600): give it the mode a plain write would
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _apply_umask(folder: Path) -> None:
    """mkdtemp/mkstemp create private (0700/0600) entries; give the finished output the usual permissions."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)
