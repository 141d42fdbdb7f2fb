"""The one workaround for handing a Hugging Face KV cache to TransformerLens attention bridges.

Used by the decoding loop (:mod:`interventions.decoding`) and by prefix sharing in activation patching
(:mod:`patching.prefix`); it lives here, below both, so dependencies keep pointing one way.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any


def cache_kwarg(hf: Any) -> str:
    """The name under which ``hf.forward`` takes its cache (``cache`` or ``past_key_values``)."""
    params = inspect.signature(hf.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def cache_shim(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Forward pre-hook (``with_kwargs=True``) for an attention bridge."""
    # transformers >= 5.2x hands the layer cache to attention as `cache=`; TransformerLens 4.3's
    # attention bridges only read `past_key_values=`: without this the cache is never written.
    if kwargs.get("past_key_values") is None and kwargs.get("cache") is not None:
        return args, {**kwargs, "past_key_values": kwargs["cache"]}
    return None


@contextmanager
def shimmed(blocks: Sequence[Any]) -> Iterator[None]:
    """:func:`cache_shim` on every block's attention bridge for the duration of the block (removed in finally)."""
    handles = []
    try:
        for block in blocks:
            handles.append(block.attn.register_forward_pre_hook(cache_shim, with_kwargs=True))
        yield
    finally:
        for handle in handles:
            handle.remove()
