"""An independent reference for activation and attribution patching (tests only).

Uses nothing from toxlens or TransformerLens: only the raw Hugging Face model, plain
``torch`` forward hooks / pre-hooks (each removed in ``finally``) and full forward passes — one
patch per forward, one pair per forward, no resuming from cached residuals.

Sites, in the raw model's own modules:

* head ``(l, h)``: the slice ``[h*d_head:(h+1)*d_head]`` of the INPUT of the attention output projection
  (GPT-2 ``transformer.h[l].attn.c_proj``, Llama ``model.layers[l].self_attn.o_proj``);
* MLP ``l``: the output of ``transformer.h[l].mlp`` / ``model.layers[l].mlp``;
* resid_pre ``(l, pos)``: the ``hidden_states`` input of decoder layer ``l``.

Metric: ``log Σ_{t∈T} softmax(logits[-1])_t``, written out by hand (max-shifted log-sum-exp, float64).
Scores: ``mean = (mean_i patched_i − mean_i m_benign_i) / (mean_i m_toxic_i − mean_i m_benign_i)`` and
``per_pair_i = (patched_i − m_benign_i) / (m_toxic_i − m_benign_i)``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

# ---------------------------------------------------------------------------------------------
# The raw model's modules


def is_gpt2(hf: Any) -> bool:
    return hasattr(hf, "transformer")


def decoder_layers(hf: Any) -> Any:
    return hf.transformer.h if is_gpt2(hf) else hf.model.layers


def attn_out_proj(hf: Any, layer: int) -> nn.Module:
    module: nn.Module = (
        decoder_layers(hf)[layer].attn.c_proj if is_gpt2(hf) else decoder_layers(hf)[layer].self_attn.o_proj
    )
    return module


def mlp_module(hf: Any, layer: int) -> nn.Module:
    module: nn.Module = decoder_layers(hf)[layer].mlp
    return module


def dims(hf: Any) -> tuple[int, int, int]:
    """(n_layers, n_heads, d_head) from the HF config."""
    cfg = hf.config
    if is_gpt2(hf):
        return cfg.n_layer, cfg.n_head, cfg.n_embd // cfg.n_head
    d_head = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return cfg.num_hidden_layers, cfg.num_attention_heads, d_head


# ---------------------------------------------------------------------------------------------
# Metric


def toxic_log_mass(logits: Tensor, token_ids: Sequence[int]) -> Tensor:
    """``log Σ_{t∈T} softmax(logits)_t`` per row, by hand in float64."""
    x = logits.double()
    top = x.max(dim=-1, keepdim=True).values
    log_z = top + (x - top).exp().sum(-1, keepdim=True).log()
    logp = (x - log_z)[:, list(token_ids)]
    top_t = logp.max(dim=-1, keepdim=True).values
    return (top_t + (logp - top_t).exp().sum(-1, keepdim=True).log()).squeeze(-1)


# ---------------------------------------------------------------------------------------------
# Cells


@dataclass(frozen=True)
class Cell:
    site: str  # "head" | "mlp" | "resid"
    layer: int
    head: int | None = None
    pos: int | tuple[int, ...] | None = None  # None: every position; a tuple: a set of positions

    @property
    def name(self) -> str:
        if self.site == "head":
            base = f"L{self.layer}H{self.head}"
        elif self.site == "mlp":
            base = f"L{self.layer}.mlp"
        else:
            base = f"L{self.layer}.resid_pre"
        return base if self.pos is None else f"{base}@{self.pos}"


def cells(
    target: str, n_layers: int, n_heads: int, seq_len: int | None = None
) -> tuple[tuple[int, ...], list[Cell]]:
    """Shape and cells (row-major) of a named target."""
    layers, heads = range(n_layers), range(n_heads)
    if target == "components":
        out = []
        for layer in layers:
            out += [Cell("head", layer, h) for h in heads]
            out.append(Cell("mlp", layer))
        return (len(out),), out
    if target == "heads":
        return (n_layers, n_heads), [Cell("head", layer, h) for layer, h in itertools.product(layers, heads)]
    if target == "mlps":
        return (n_layers,), [Cell("mlp", layer) for layer in layers]
    assert seq_len is not None, "positional targets need one sequence length"
    positions = range(seq_len)
    if target == "resid_by_pos":
        return (n_layers, seq_len), [
            Cell("resid", layer, None, p) for layer, p in itertools.product(layers, positions)
        ]
    if target == "heads_by_pos":
        return (n_layers, n_heads, seq_len), [
            Cell("head", layer, h, p) for layer, h, p in itertools.product(layers, heads, positions)
        ]
    raise ValueError(target)


# ---------------------------------------------------------------------------------------------
# Hooks (plain torch; every handle removed in finally)

Acts = dict[tuple[str, int], Tensor]


@contextmanager
def hooked(registrations: list[Callable[[], Any]]) -> Iterator[None]:
    handles = []
    try:
        for register in registrations:
            handles.append(register())
        yield
    finally:
        for handle in handles:
            handle.remove()


def _hidden(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tensor:
    hidden: Tensor = args[0] if args else kwargs["hidden_states"]
    return hidden


def _with_hidden(
    args: tuple[Any, ...], kwargs: dict[str, Any], new: Tensor
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if args:
        return (new, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": new}


def recorders(hf: Any, store: Acts, detach: bool) -> list[Callable[[], Any]]:
    """Registrations recording o_proj inputs ("z"), MLP outputs ("mlp") and layer inputs ("resid")."""
    n_layers = dims(hf)[0]
    keep: Callable[[Tensor], Tensor] = (lambda t: t.detach().clone()) if detach else (lambda t: t)
    regs: list[Callable[[], Any]] = []
    for layer in range(n_layers):

        def z_pre(_m: Any, args: tuple[Any, ...], layer: int = layer) -> None:
            store["z", layer] = keep(args[0])

        def mlp_post(_m: Any, _args: Any, out: Tensor, layer: int = layer) -> None:
            store["mlp", layer] = keep(out)

        def resid_pre(_m: Any, args: tuple[Any, ...], kwargs: dict[str, Any], layer: int = layer) -> None:
            store["resid", layer] = keep(_hidden(args, kwargs))

        proj, mlp, block = attn_out_proj(hf, layer), mlp_module(hf, layer), decoder_layers(hf)[layer]
        regs.append(partial(proj.register_forward_pre_hook, z_pre))
        regs.append(partial(mlp.register_forward_hook, mlp_post))
        regs.append(partial(block.register_forward_pre_hook, resid_pre, with_kwargs=True))
    return regs


def _select(cell: Cell, d_head: int) -> tuple[Any, ...]:
    """Index into an activation ``[batch, pos, features]`` selecting the cell's entries."""
    pos: Any = slice(None) if cell.pos is None else cell.pos
    if isinstance(pos, tuple):
        pos = list(pos)
    if cell.site == "head":
        assert cell.head is not None
        return (slice(None), pos, slice(cell.head * d_head, (cell.head + 1) * d_head))
    return (slice(None), pos, slice(None))


def patcher(hf: Any, cell: Cell, source: Tensor) -> Callable[[], Any]:
    """Registration replacing the cell's entries with ``source``'s (the toxic run's activation)."""
    index = _select(cell, dims(hf)[2])

    def patched(t: Tensor) -> Tensor:
        t = t.clone()
        t[index] = source[index].to(t.dtype)
        return t

    if cell.site == "head":

        def z_pre(_m: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
            return (patched(args[0]), *args[1:])

        proj = attn_out_proj(hf, cell.layer)
        return lambda: proj.register_forward_pre_hook(z_pre)
    if cell.site == "mlp":

        def mlp_post(_m: Any, _args: Any, out: Tensor) -> Tensor:
            return patched(out)

        mlp = mlp_module(hf, cell.layer)
        return lambda: mlp.register_forward_hook(mlp_post)

    def resid_pre(
        _m: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return _with_hidden(args, kwargs, patched(_hidden(args, kwargs)))

    block = decoder_layers(hf)[cell.layer]
    return lambda: block.register_forward_pre_hook(resid_pre, with_kwargs=True)


def _key(cell: Cell) -> tuple[str, int]:
    return ("z" if cell.site == "head" else cell.site), cell.layer


def final_logits(hf: Any, ids: Sequence[int]) -> Tensor:
    out: Tensor = hf(torch.tensor([list(ids)]), use_cache=False).logits[:, -1]
    return out


# ---------------------------------------------------------------------------------------------
# The two references


@dataclass
class RefResult:
    names: list[str]
    patched: Tensor  # [pair, *shape], float64
    m_toxic: Tensor
    m_benign: Tensor

    @property
    def mean(self) -> Tensor:
        return (self.patched.mean(0) - self.m_benign.mean()) / (self.m_toxic.mean() - self.m_benign.mean())

    @property
    def per_pair(self) -> Tensor:
        view = (-1,) + (1,) * (self.patched.ndim - 1)
        return (self.patched - self.m_benign.view(view)) / (self.m_toxic - self.m_benign).view(view)


Pairs = Sequence[tuple[Sequence[int], Sequence[int]]]


def _layout(hf: Any, pairs: Pairs, target: str) -> tuple[tuple[int, ...], list[Cell]]:
    n_layers, n_heads, _ = dims(hf)
    lengths = {len(t) for t, _ in pairs}
    assert all(len(t) == len(b) for t, b in pairs)
    return cells(target, n_layers, n_heads, next(iter(lengths)) if len(lengths) == 1 else None)


@torch.no_grad()
def activation_reference(hf: Any, pairs: Pairs, token_ids: Sequence[int], target: str) -> RefResult:
    """``patched[i, c] = m(benign_i with c from toxic_i)``: one full forward per (pair, cell)."""
    shape, cs = _layout(hf, pairs, target)
    patched = torch.empty(len(pairs), len(cs), dtype=torch.float64)
    m_toxic = torch.empty(len(pairs), dtype=torch.float64)
    m_benign = torch.empty(len(pairs), dtype=torch.float64)
    for i, (toxic, benign) in enumerate(pairs):
        acts: Acts = {}
        with hooked(recorders(hf, acts, detach=True)):
            m_toxic[i] = toxic_log_mass(final_logits(hf, toxic), token_ids)[0]
        m_benign[i] = toxic_log_mass(final_logits(hf, benign), token_ids)[0]
        for j, cell in enumerate(cs):
            with hooked([patcher(hf, cell, acts[_key(cell)])]):
                patched[i, j] = toxic_log_mass(final_logits(hf, benign), token_ids)[0]
    return RefResult([c.name for c in cs], patched.reshape(len(pairs), *shape), m_toxic, m_benign)


def attribution_reference(hf: Any, pairs: Pairs, token_ids: Sequence[int], target: str) -> RefResult:
    """``patched[i, c] = m(benign_i) + Σ_c ∂m/∂a |_benign · (a(toxic_i) − a(benign_i))`` with the
    gradients taken by ``torch.autograd.grad`` through the raw model (recorded, non-detached activations)."""
    shape, cs = _layout(hf, pairs, target)
    d_head = dims(hf)[2]
    patched = torch.empty(len(pairs), len(cs), dtype=torch.float64)
    m_toxic = torch.empty(len(pairs), dtype=torch.float64)
    m_benign = torch.empty(len(pairs), dtype=torch.float64)
    for i, (toxic, benign) in enumerate(pairs):
        tox: Acts = {}
        with torch.no_grad(), hooked(recorders(hf, tox, detach=True)):
            m_toxic[i] = toxic_log_mass(final_logits(hf, toxic), token_ids)[0]
        ben: Acts = {}
        with torch.enable_grad(), hooked(recorders(hf, ben, detach=False)):
            m = toxic_log_mass(final_logits(hf, benign), token_ids)[0]
            keys = sorted(ben)
            grads = dict(zip(keys, torch.autograd.grad(m, [ben[k] for k in keys])))
        m_benign[i] = m.detach()
        for j, cell in enumerate(cs):
            k, index = _key(cell), _select(cell, d_head)
            delta = (tox[k] - ben[k].detach()).double()
            patched[i, j] = m_benign[i] + (grads[k].double() * delta)[index].sum()
    return RefResult([c.name for c in cs], patched.reshape(len(pairs), *shape), m_toxic, m_benign)
