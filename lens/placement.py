"""Placing a model across devices: ``--device-map`` and ``--max-memory`` (needs ``accelerate``).

``--device-map auto|balanced|balanced_low_0|sequential`` is handed to transformers'
``from_pretrained(device_map=...)``, which asks accelerate to place each decoder block (and the
embedding, final norm and unembedding) on the GPUs, the CPU and — when nothing else has room — on
disk (an offload folder that lives as long as the loaded model). ``--max-memory 0=20GiB,cpu=64GiB``
caps what each device may hold (keys: a CUDA index, ``cpu`` or ``mps``; values: bytes with an
optional unit B, KB, MB, GB, TB, KiB, MiB, GiB, TiB).

accelerate puts a hook on every placed module that moves its inputs to the module's execution
device, so TransformerLens hooks fire wherever a block lives; :func:`input_device` is the device of
the embedding, where token ids must go.
"""

from __future__ import annotations

import importlib.util
import re
import tempfile
from typing import Any

import torch

from lens.errors import ToxlensError

DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")
UNITS = {
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}
SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def accelerate_available() -> bool:
    return importlib.util.find_spec("accelerate") is not None


def check_device_map(device_map: str | None, device: str | None, max_memory: str | None) -> None:
    """Refuse (one error each) an unknown map, a map together with ``--device``, ``--max-memory``
    without a map, a missing ``accelerate`` and a malformed ``--max-memory``."""
    if device_map is None:
        if max_memory is not None:
            raise ToxlensError(
                f"--max-memory {max_memory!r} needs --device-map (e.g. --device-map auto); got no --device-map"
            )
        return
    if device_map not in DEVICE_MAPS:
        raise ToxlensError(f"unknown --device-map {device_map!r}; expected one of {list(DEVICE_MAPS)}")
    if device not in (None, "auto"):
        raise ToxlensError(
            f"--device {device!r} and --device-map {device_map!r} exclude each other; "
            "expected one of them (the map chooses the devices)"
        )
    if not accelerate_available():
        raise ToxlensError(
            f"--device-map {device_map!r} needs the package accelerate, which is not installed; "
            "expected `pip install accelerate`, or drop --device-map to load on one device"
        )
    if max_memory is not None:
        parse_max_memory(max_memory)


def placement_kwargs(
    device_map: str | None, max_memory: str | None, kwargs: dict[str, Any]
) -> tempfile.TemporaryDirectory[str] | None:
    """Add ``device_map``, ``max_memory`` and ``offload_folder`` to ``from_pretrained``'s ``kwargs``;
    returns the offload folder (to be kept alive with the model), ``None`` without a device map."""
    if device_map is None:
        return None
    offload = tempfile.TemporaryDirectory(prefix="toxlens-offload-")
    kwargs["device_map"] = device_map
    kwargs["offload_folder"] = offload.name
    if max_memory is not None:
        kwargs["max_memory"] = parse_max_memory(max_memory)
    return offload


def parse_max_memory(text: str) -> dict[int | str, int]:
    """``"0=200MB,cpu=1GB"`` → ``{0: 200_000_000, "cpu": 1_000_000_000}`` (bytes)."""
    out: dict[int | str, int] = {}
    items = [item.strip() for item in text.split(",")]
    if not text.strip() or any(not item for item in items):
        raise ToxlensError(
            f"--max-memory {text!r} is malformed; expected DEVICE=SIZE[,DEVICE=SIZE...] "
            "such as 0=20GiB,cpu=64GiB"
        )
    for item in items:
        key, eq, value = item.partition("=")
        key = key.strip().lower()
        if not eq:
            raise ToxlensError(
                f"--max-memory entry {item!r} has no '='; expected DEVICE=SIZE such as cpu=1GB"
            )
        dev: int | str
        if key.isdigit():
            dev = int(key)
            if torch.cuda.is_available() and dev >= torch.cuda.device_count():
                raise ToxlensError(
                    f"--max-memory entry {item!r}: only {torch.cuda.device_count()} CUDA device(s) exist"
                )
        elif key in ("cpu", "mps"):
            dev = key
        else:
            raise ToxlensError(
                f"--max-memory entry {item!r}: unknown device {key!r}; expected a CUDA index (0, 1, ...), "
                "cpu or mps"
            )
        if dev in out:
            raise ToxlensError(f"--max-memory names device {key!r} twice; expected each device once")
        out[dev] = parse_size(value, item)
    return out


def parse_size(value: str, item: str) -> int:
    m = SIZE.match(value)
    unit = (m.group(2) or "B").upper() if m else ""
    if m is None or unit not in UNITS:
        raise ToxlensError(
            f"--max-memory entry {item!r}: size {value!r} is malformed; expected a number with an optional "
            f"unit, one of {list(UNITS)} (e.g. 200MB, 1.5GiB)"
        )
    size = int(float(m.group(1)) * UNITS[unit])
    if size <= 0:
        raise ToxlensError(f"--max-memory entry {item!r}: size must be > 0 bytes, got {size}")
    return size


def input_device(hf_model: Any) -> torch.device:
    """Where token ids must go: the embedding's execution device (accelerate's, when it is offloaded)."""
    emb = hf_model.get_input_embeddings()
    for module in (emb, hf_model):
        hook = getattr(module, "_hf_hook", None)
        exec_dev = getattr(hook, "execution_device", None)
        if exec_dev is not None:
            return torch.device(exec_dev if not isinstance(exec_dev, int) else f"cuda:{exec_dev}")
    dev = next(emb.parameters()).device
    return torch.device("cpu") if dev.type == "meta" else dev


def device_map_info(hf_model: Any) -> dict[str, str] | None:
    """The placement accelerate chose, ``{module: device}`` (``None`` for a one-device load)."""
    mapping = getattr(hf_model, "hf_device_map", None)
    if not mapping:
        return None
    return {str(k): str(v) for k, v in mapping.items()}
