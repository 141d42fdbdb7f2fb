"""A disk cache of de-quantised GGUF models as standard Hugging Face directories.

Parsing and de-quantising a GGUF file (and converting its tokenizer) takes tens of seconds; reading the
same weights back from safetensors takes about one. The first load of a GGUF spec (``smollm2-135m`` or a
``.gguf`` path) writes the converted model — ``config.json``, ``model.safetensors`` (float32, exactly
as de-quantised), the tokenizer files and ``toxlens-key.json`` — to::

    $TOXLENS_CACHE/gguf/<sha256 of the GGUF file's resolved path>/

(``TOXLENS_CACHE`` defaults to ``~/.cache/toxlens``; ``TOXLENS_CACHE=off`` disables the cache). The
entry is valid only while its key — resolved path, size and modification time of the GGUF file and the
transformers version — matches; otherwise it is rebuilt. An entry is written into a temporary directory
beside it and renamed into place, so a reader never sees a half-written entry.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lens.io import cache_root as cache_root  # re-exported (tests, callers of this module)

KEY_FILE = "toxlens-key.json"
Loaded = tuple[Any, Any]  # (tokenizer, model)


def gguf_key(gguf: Path) -> dict[str, Any]:
    """What the cached conversion depends on: the GGUF file (path, size, mtime) and transformers."""
    import transformers

    resolved = gguf.expanduser().resolve()
    stat = resolved.stat()
    return {
        "gguf": str(resolved),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "transformers": transformers.__version__,
        "dtype": "float32",
    }


def entry_dir(root: Path, gguf: Path) -> Path:
    digest = hashlib.sha256(str(gguf.expanduser().resolve()).encode()).hexdigest()[:24]
    return root / "gguf" / digest


def is_valid(entry: Path, key: dict[str, Any]) -> bool:
    try:
        stored = json.loads((entry / KEY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(stored == key)


def write_entry(entry: Path, key: dict[str, Any], tokenizer: Any, model: Any) -> None:
    """Save ``model`` and ``tokenizer`` under ``entry`` atomically (temporary directory, then rename)."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{entry.name}-", dir=entry.parent))
    try:
        save_plain(model, tmp)
        tokenizer.save_pretrained(str(tmp))
        (tmp / KEY_FILE).write_text(json.dumps(key, indent=2), encoding="utf-8")  # last: marks it complete
        old = None
        if entry.exists():
            old = entry.parent / f".old-{entry.name}-{os.getpid()}"
            os.replace(entry, old)
        os.replace(tmp, entry)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def save_plain(model: Any, directory: Path) -> None:
    """config.json (without the GGUF quantisation record) and model.safetensors (tied weights once)."""
    from safetensors.torch import save_model

    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.save_pretrained(str(directory))
    save_model(model, str(directory / "model.safetensors"), metadata={"format": "pt"})


def load_gguf_cached(
    gguf: Path, convert: Callable[[], Loaded], read: Callable[[Path], Loaded]
) -> tuple[Any, Any, str]:
    """``(tokenizer, model, status)`` for ``gguf``: read from a valid cache entry (status ``"hit"``),
    or ``convert()`` the GGUF file and store the result (``"miss"``; ``"off"`` when disabled).
    A cache that cannot be written (read-only disk) only costs the speed-up."""
    root = cache_root()
    if root is None:
        return (*convert(), "off")
    key = gguf_key(gguf)
    entry = entry_dir(root, gguf)
    if is_valid(entry, key):
        return (*read(entry), "hit")
    tokenizer, model = convert()
    try:
        write_entry(entry, key, tokenizer, model)
    except OSError:
        return tokenizer, model, "unwritable"
    return tokenizer, model, "miss"
