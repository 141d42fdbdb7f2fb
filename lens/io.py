"""Atomic writes: a file or a whole output directory appears complete or not at all.

Every output directory toxlens writes holds a marker file, :data:`MARKER`. ``--overwrite`` replaces only a
directory that carries it (so it never deletes a directory holding anything else), never the current
directory or one of its parents, and never a directory that is or contains an input of the command.
Output directories get the process's normal permissions (``0o777 & ~umask``), and a SIGTERM during a
write cleans up like Ctrl-C does (:func:`sigterm_as_interrupt`).
"""

from __future__ import annotations

import errno
import math
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lens.errors import ToxlensError

MARKER = ".toxlens-output"


def cache_root() -> Path | None:
    """toxlens's cache directory (``$TOXLENS_CACHE``, default ``~/.cache/toxlens``; ``None`` when it is ``off``),
    shared by the converted-model cache (:mod:`lens.gguf_cache`) and the default word list (:mod:`lens.tokens`)."""
    value = os.environ.get("TOXLENS_CACHE", "").strip()
    if value.lower() in ("off", "0", "false", "no"):
        return None
    return Path(value).expanduser() if value else Path.home() / ".cache" / "toxlens"


def atomic_file(path: Path, write: Callable[[str], object]) -> None:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_output_dir(
    out: str | Path, overwrite: bool = False, inputs: Iterable[str | Path | None] = ()
) -> None:
    """Refuse an output directory that cannot or must not be (re)written, before any work is done.

    Refused: a path that is a file or lies under a file; an unwritable parent (read-only mount, no
    permission); the current directory or one of its parents; a path that is or contains one of
    ``inputs``; an existing non-empty directory without ``overwrite``; with ``overwrite``, an existing
    non-empty directory without the :data:`MARKER` file (not written by toxlens).
    """
    target = Path(out).expanduser()
    resolved = target.resolve()
    if target.exists() and not target.is_dir():
        raise ToxlensError(f"output path {str(out)!r} exists and is not a directory")
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise ToxlensError(
            f"output directory {str(out)!r} is the current directory or one of its parents; "
            "expected a new or toxlens-written directory"
        )
    for item in inputs:
        if item is None or str(item).startswith("hf:"):
            continue
        inp = Path(item).expanduser()
        if not inp.exists():
            continue
        inp = inp.resolve()
        if inp == resolved or resolved in inp.parents:
            raise ToxlensError(
                f"output directory {str(out)!r} is or contains the input {str(item)!r}; "
                "expected an output directory apart from the inputs"
            )
    _check_writable(target)
    if target.is_dir() and any(target.iterdir()):
        if not overwrite:
            raise ToxlensError(
                f"output directory {str(out)!r} already exists and is not empty (use --overwrite)"
            )
        if not (target / MARKER).is_file():
            raise ToxlensError(
                f"output directory {str(out)!r} was not written by toxlens (no {MARKER} file); "
                "--overwrite replaces only toxlens output directories — choose another --out"
            )


def _check_writable(target: Path) -> None:
    """The nearest existing ancestor of ``target``'s parent must be a writable directory."""
    probe = target.absolute().parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ToxlensError(f"output directory {str(target)!r} cannot be created: {str(probe)!r} is a file")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ToxlensError(
            f"output directory {str(target)!r} cannot be created: {str(probe)!r} is not writable "
            "(read-only file system or no permission)"
        )


@contextmanager
def atomic_directory(
    out: str | Path, overwrite: bool = False, inputs: Iterable[str | Path | None] = ()
) -> Iterator[Path]:
    """Yield a staging directory beside ``out``; on success it is renamed to ``out``.

    If the body raises (or is interrupted, also by SIGTERM under :func:`sigterm_as_interrupt`), the
    staging directory is deleted and ``out`` is untouched. The directory gets the :data:`MARKER` file and
    permissions ``0o777 & ~umask``.
    """
    target = Path(out).expanduser()
    inputs = list(inputs)
    check_output_dir(target, overwrite, inputs)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.partial-"))
    except OSError as err:
        raise ToxlensError(f"cannot create output directory {str(out)!r}: {err.strerror}") from err
    try:
        os.chmod(staging, 0o777 & ~_umask())
        (staging / MARKER).write_text("written by toxlens; --overwrite may replace this directory\n")
        yield staging
        check_output_dir(target, overwrite, inputs)  # nothing else appeared there meanwhile
        if target.exists():
            old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
            try:
                os.replace(target, old / "d")
            except OSError as err:
                shutil.rmtree(old, ignore_errors=True)
                why = "it is in use" if err.errno == errno.EBUSY else err.strerror
                raise ToxlensError(f"cannot replace output directory {str(out)!r}: {why}") from err
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _raise_interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`KeyboardInterrupt` (so staging directories are removed
    exactly as on Ctrl-C). A no-op outside the main thread."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, ±inf) replaced by ``None`` (JSON ``null``)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj
