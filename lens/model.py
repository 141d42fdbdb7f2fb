"""`LensModel`: a TransformerBridge (compatibility mode, no weight processing) plus its tokenizer.

Besides the bridge's own forward, it offers the three pieces every fast sweep is built from:

* :meth:`LensModel.prepare` runs only the embedding stage and records the exact arguments the
  decoder layers are called with (rotary tables, causal mask, position ids);
* :meth:`LensModel.run_layers` resumes the forward from any block on a given residual stream —
  the layers before it are never recomputed;
* :meth:`LensModel.logits_at` applies the final norm and unembedding at chosen positions only.

The blocks called here are the bridge's own ``BlockBridge`` modules, so every TransformerLens hook
point (``blocks.{l}.attn.hook_z``, ``blocks.{l}.hook_mlp_out``, …) fires exactly as in a full forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from lens.errors import ToxlensError
from lens.placement import device_map_info, input_device


@dataclass(frozen=True)
class ModelInfo:
    spec: str
    architecture: str
    n_layers: int
    n_heads: int
    n_key_value_heads: int
    d_model: int
    d_head: int
    d_vocab: int
    n_ctx: int
    dtype: str
    device: str
    device_map: dict[str, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Prepared:
    """Embedding output and the (batch-independent) call arguments of the decoder layers."""

    resid: Float[Tensor, "batch pos d_model"]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


class _StopForward(Exception):
    pass


class LensModel:
    """A loaded model. Build one with :func:`lens.load_model` (or wrap a bridge with ``from_bridge``)."""

    def __init__(self, bridge: Any, tokenizer: Any, spec: str) -> None:
        self.bridge = bridge
        self.tokenizer = tokenizer
        self.spec = spec
        cfg = bridge.cfg
        n_kv = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
        self.info = ModelInfo(
            spec=spec,
            architecture=str(getattr(cfg, "architecture", type(bridge.original_model).__name__)),
            n_layers=int(cfg.n_layers),
            n_heads=int(cfg.n_heads),
            n_key_value_heads=int(n_kv),
            d_model=int(cfg.d_model),
            d_head=int(cfg.d_head),
            d_vocab=int(cfg.d_vocab),
            n_ctx=int(cfg.n_ctx),
            dtype=str(next(bridge.original_model.parameters()).dtype).replace("torch.", ""),
            device=str(input_device(bridge.original_model)),
            device_map=device_map_info(bridge.original_model),
        )
        self.offload_dir: Any = None

    # -- basic facts -------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return self.info.n_layers

    @property
    def n_heads(self) -> int:
        return self.info.n_heads

    @property
    def device(self) -> torch.device:
        return torch.device(self.info.device)

    @property
    def blocks(self) -> Sequence[Any]:
        blocks: Sequence[Any] = self.bridge.blocks
        return blocks

    # -- tokenization ------------------------------------------------------------------------
    def tokenize(self, text: str, prepend_bos: bool = False) -> list[int]:
        """Exactly ``tokenizer(text)["input_ids"]``; with ``prepend_bos`` the BOS id is put in front
        (unless the tokenizer already starts with it)."""
        ids: list[int] = list(self.tokenizer(text)["input_ids"])
        if prepend_bos:
            bos = self.tokenizer.bos_token_id
            if bos is None:
                raise ToxlensError(
                    f"prepend_bos requested but the tokenizer of {self.spec!r} has no BOS token"
                )
            if not ids or ids[0] != bos:
                ids = [bos, *ids]
        return ids

    # -- the three pieces of a resumable forward ---------------------------------------------
    @torch.no_grad()
    def prepare(self, tokens: Int[Tensor, "batch pos"]) -> Prepared:
        """Embed ``tokens`` (no padding) and capture the decoder layers' call arguments.

        Only the embedding stage runs: a pre-hook on block 0 records its inputs and stops the pass.
        Arguments that carry a batch dimension (the causal mask) are captured from a one-row pass
        too and that row is used, so the arguments broadcast over any batch size.
        """
        if tokens.ndim != 2 or tokens.shape[0] == 0:
            raise ToxlensError(
                f"tokens must be a non-empty [batch, pos] tensor, got shape {tuple(tokens.shape)}"
            )
        resid, args, kwargs = self._capture_block0(tokens)
        if tokens.shape[0] > 1:
            _, args1, kwargs1 = self._capture_block0(tokens[:1])
            args = tuple(_one_row(a, a1) for a, a1 in zip(args, args1))
            kwargs = {k: _one_row(v, kwargs1[k]) for k, v in kwargs.items()}
        return Prepared(resid=resid, args=args, kwargs=kwargs)

    def _capture_block0(self, tokens: Tensor) -> tuple[Tensor, tuple[Any, ...], dict[str, Any]]:
        record: dict[str, Any] = {}

        def pre_hook(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            record["args"], record["kwargs"] = args, kwargs
            raise _StopForward

        handle = self.blocks[0].register_forward_pre_hook(pre_hook, with_kwargs=True)
        try:
            self.bridge(tokens.to(self.device), use_cache=False)
        except _StopForward:
            pass
        finally:
            handle.remove()
        if "args" not in record:
            raise ToxlensError("block 0 was never called while embedding the prompt")
        args, kwargs = record["args"], dict(record["kwargs"])
        if args:
            resid, rest = args[0], tuple(args[1:])
        else:
            resid, rest = kwargs.pop("hidden_states"), ()
        return resid.detach().clone(), rest, kwargs

    def run_layers(
        self,
        resid: Float[Tensor, "batch pos d_model"],
        prepared: Prepared,
        start: int = 0,
        stop: int | None = None,
    ) -> Float[Tensor, "batch pos d_model"]:
        """Run blocks ``start .. stop-1`` on ``resid`` (the residual entering block ``start``)."""
        stop = self.n_layers if stop is None else stop
        if not 0 <= start <= stop <= self.n_layers:
            raise ToxlensError(f"layer range [{start}, {stop}) outside [0, {self.n_layers}]")
        x = resid
        for layer in range(start, stop):
            out = self.blocks[layer](x, *prepared.args, **prepared.kwargs)
            x = out[0] if isinstance(out, tuple) else out
        return x

    def logits_at(
        self, resid: Float[Tensor, "batch pos d_model"], positions: int | slice = -1
    ) -> Float[Tensor, "batch d_vocab"] | Float[Tensor, "batch pos d_vocab"]:
        """Final norm + unembedding of the final residual stream, at ``positions`` only."""
        x = resid[:, positions]
        squeeze = x.ndim == 2
        if squeeze:
            x = x.unsqueeze(1)
        logits: Tensor = self.bridge.unembed(self.bridge.ln_final(x))
        return logits[:, 0] if squeeze else logits

    def final_logits(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch d_vocab"]:
        """Logits at the last position (one resumable forward, unembedding only the last position)."""
        prepared = self.prepare(tokens)
        resid = self.run_layers(prepared.resid, prepared)
        out: Tensor = self.logits_at(resid, -1)
        return out


def _one_row(full: Any, one: Any) -> Any:
    """Pick the one-row version of a layer argument where the full-batch one has a batch dimension.

    Without padding every row of the causal mask is the same; anything else is refused.
    """
    if isinstance(full, tuple):
        return tuple(_one_row(f, o) for f, o in zip(full, one))
    if isinstance(full, Tensor) and isinstance(one, Tensor) and full.shape != one.shape:
        if full.shape[1:] != one.shape[1:] or not torch.equal(full, one.expand_as(full)):
            raise ToxlensError(
                f"layer argument of shape {tuple(full.shape)} differs between batch rows; "
                "sequences in one batch must share their length and have no padding"
            )
        return one
    return full
