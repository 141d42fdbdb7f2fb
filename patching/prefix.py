"""Prefix sharing for patched forwards: the benign run's keys/values before the first differing token.

Attention is causal, so at every position before a pair's first differing token ``d`` the toxic and
benign runs are identical and a patch there changes nothing. The patched forwards therefore run only
on positions ``d ..``; the attention of those positions reads the prefix's keys/values from a Hugging
Face ``DynamicCache`` built fresh for every forward (the prefix tensors themselves are never mutated:
the cache concatenates into new tensors).

With transformers 5.2x the decoder layer hands its cache to the attention as ``cache=`` while the
TransformerLens attention bridges read ``past_key_values=``; :func:`lens.kv_cache.cache_shim`
(also used by the decoding loop) is the one place that bridges this and is reused here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from lens.errors import ToxlensError
from lens.kv_cache import cache_kwarg, shimmed
from lens.model import LensModel, Prepared


def first_difference(a: Sequence[int], b: Sequence[int]) -> int:
    """The first position where ``a`` and ``b`` differ (``min(len)`` when one is a prefix of the other)."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


@dataclass
class PrefixKV:
    """Per layer, the prefix's keys and values ``[pair, kv_head, d, d_head]`` (``d`` positions)."""

    d: int
    keys: list[Tensor]
    values: list[Tensor]

    def cache_layer(self, cache: Any, layer: int, rows: Int[Tensor, " row"]) -> None:
        """Fill layer ``layer`` of a fresh ``cache`` with the prefix of each row's pair."""
        cache.update(self.keys[layer][rows], self.values[layer][rows], layer)


def new_cache() -> Any:
    from transformers import DynamicCache

    return DynamicCache()


@torch.no_grad()
def prefix_kv(model: LensModel, prefix: Int[Tensor, "pair d"]) -> PrefixKV:
    """Run the model on the shared prefix tokens once and keep every layer's keys and values."""
    hf = model.bridge.original_model
    cache = new_cache()
    with shimmed(model.blocks):
        hf(input_ids=prefix.to(model.device), use_cache=True, logits_to_keep=1, **{cache_kwarg(hf): cache})
    layers = getattr(cache, "layers", None)
    if layers is None or len(layers) != model.n_layers:
        raise ToxlensError(
            f"prefix cache holds {0 if layers is None else len(layers)} layers; expected {model.n_layers}"
        )
    keys = [layer.keys for layer in layers]
    values = [layer.values for layer in layers]
    if keys[0].shape[-2] != prefix.shape[1]:
        raise ToxlensError(
            f"prefix cache holds {keys[0].shape[-2]} positions; expected {prefix.shape[1]} (the prefix length)"
        )
    return PrefixKV(int(prefix.shape[1]), keys, values)


class _Stop(Exception):
    pass


@torch.no_grad()
def prepare_suffix(model: LensModel, tokens: Int[Tensor, "1 pos"], kv: PrefixKV) -> tuple[Prepared, Any]:
    """Decoder-layer call arguments (rotary tables, causal mask, position ids) for positions ``kv.d ..``
    of ``tokens`` after a cached prefix of ``kv.d`` positions; also returns the placeholder cache object
    inside those arguments, which :func:`with_cache` swaps for a fresh cache per forward."""
    if tokens.ndim != 2 or tokens.shape[0] != 1 or not 0 < kv.d < tokens.shape[1]:
        raise ToxlensError(
            f"prepare_suffix needs one row of tokens longer than the prefix ({kv.d}), "
            f"got shape {tuple(tokens.shape)}"
        )
    hf = model.bridge.original_model
    placeholder = new_cache()
    rows = torch.zeros(1, dtype=torch.long, device=kv.keys[0].device)
    for layer in range(model.n_layers):
        kv.cache_layer(placeholder, layer, rows)
    record: dict[str, Any] = {}

    def pre_hook(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        record["args"], record["kwargs"] = args, dict(kwargs)
        raise _Stop

    handle = model.blocks[0].register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        hf(input_ids=tokens[:, kv.d :].to(model.device), use_cache=True, **{cache_kwarg(hf): placeholder})
    except _Stop:
        pass
    finally:
        handle.remove()
    if "args" not in record:
        raise ToxlensError("block 0 was never called while embedding the suffix")
    args, kwargs = record["args"], record["kwargs"]
    if args:
        resid, rest = args[0], tuple(args[1:])
    else:
        resid, rest = kwargs.pop("hidden_states"), ()
    return Prepared(resid=resid.detach().clone(), args=rest, kwargs=kwargs), placeholder


def with_cache(prepared: Prepared, placeholder: Any, cache: Any) -> Prepared:
    """``prepared`` with the placeholder cache object replaced by ``cache`` (arguments otherwise shared)."""

    def swap(v: Any) -> Any:
        return cache if v is placeholder else v

    return Prepared(
        prepared.resid,
        tuple(swap(a) for a in prepared.args),
        {k: swap(v) for k, v in prepared.kwargs.items()},
    )
