"""Independent references for RelP and integrated gradients (tests only).

Like ``tests/reference.py`` these use only the raw Hugging Face model and plain torch hooks:

* :func:`lrp_modules` rewrites the raw model's own modules (written the way the RelP authors' code does
  it, not through toxlens's hook points): LayerNorm / RMSNorm divide by a detached scale; the MLP
  activation becomes ``x · (act(x)/x̃).detach()``; a gated product ``p = act'(gate)·up`` becomes
  ``p/2 + (p/2).detach()``. Plain ``attribution_reference`` under it is the RelP reference.
* :func:`ig_reference` interpolates the token embeddings (``inputs_embeds``) benign → toxic, one full
  forward + backward per (pair, step), and averages the gradients at the recorded sites.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from reference import (
    Acts,
    RefResult,
    _key,
    _layout,
    _select,
    decoder_layers,
    dims,
    hooked,
    is_gpt2,
    recorders,
    toxic_log_mass,
)
from torch import Tensor, nn


def _stab(x: Tensor) -> Tensor:
    return x + ((x == 0).to(x.dtype) + x.sign()) * 1e-6


def _identity_act(act: Any) -> Any:
    def f(x: Tensor) -> Tensor:
        return x * (act(x) / _stab(x)).detach()

    return f


class _IdentityAct(nn.Module):
    def __init__(self, act: Any) -> None:
        super().__init__()
        self.inner = act

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = _identity_act(self.inner)(x)
        return out


def _layer_norm(mod: nn.LayerNorm) -> Any:
    def forward(x: Tensor) -> Tensor:
        xc = x - x.mean(-1, keepdim=True)
        scale = (xc.pow(2).mean(-1, keepdim=True) + mod.eps).sqrt()
        return xc / scale.detach() * mod.weight + mod.bias

    return forward


def _rms_norm(mod: Any) -> Any:
    def forward(x: Tensor) -> Tensor:
        scale = (x.pow(2).mean(-1, keepdim=True) + mod.variance_epsilon).sqrt()
        return mod.weight * (x / scale.detach())

    return forward


def _gated_mlp(mod: Any) -> Any:
    act = _identity_act(mod.act_fn)

    def forward(x: Tensor) -> Tensor:
        p = act(mod.gate_proj(x)) * mod.up_proj(x)
        p = p / 2 + (p / 2).detach()
        return mod.down_proj(p)

    return forward


@contextmanager
def lrp_modules(hf: Any) -> Iterator[None]:
    """The raw model with the RelP rules (LN, identity, half) written into its modules' forwards."""
    patched: list[tuple[Any, str, Any]] = []

    def put(obj: Any, attr: str, value: Any) -> None:
        old = obj._modules[attr] if attr in obj._modules else obj.__dict__.get(attr, _MISSING)
        patched.append((obj, attr, old))
        setattr(obj, attr, value)

    try:
        if is_gpt2(hf):
            for block in decoder_layers(hf):
                put(block.ln_1, "forward", _layer_norm(block.ln_1))
                put(block.ln_2, "forward", _layer_norm(block.ln_2))
                put(block.mlp, "act", _IdentityAct(block.mlp.act))
            put(hf.transformer.ln_f, "forward", _layer_norm(hf.transformer.ln_f))
        else:
            for block in decoder_layers(hf):
                put(block.input_layernorm, "forward", _rms_norm(block.input_layernorm))
                put(block.post_attention_layernorm, "forward", _rms_norm(block.post_attention_layernorm))
                put(block.mlp, "forward", _gated_mlp(block.mlp))
            put(hf.model.norm, "forward", _rms_norm(hf.model.norm))
        yield
    finally:
        for obj, attr, old in reversed(patched):
            if old is _MISSING:
                delattr(obj, attr)
            else:
                setattr(obj, attr, old)


_MISSING = object()


def _embed(hf: Any, ids: Sequence[int]) -> Tensor:
    out: Tensor = hf.get_input_embeddings()(torch.tensor([list(ids)])).detach()
    return out


def ig_reference(hf: Any, pairs: Any, token_ids: Sequence[int], target: str, steps: int) -> RefResult:
    """``patched[i, c] = m(benign_i) + Σ_c mean_k ∂m/∂a |_{e(α_k)} · (a(toxic_i) − a(benign_i))``,
    ``α_k = (k − ½)/steps``, ``e(α)`` the interpolated token embeddings (full forwards of the raw model)."""
    shape, cs = _layout(hf, pairs, target)
    d_head = dims(hf)[2]
    patched = torch.empty(len(pairs), len(cs), dtype=torch.float64)
    m_toxic = torch.empty(len(pairs), dtype=torch.float64)
    m_benign = torch.empty(len(pairs), dtype=torch.float64)
    for i, (toxic, benign) in enumerate(pairs):
        tox: Acts = {}
        ben: Acts = {}
        with torch.no_grad():
            with hooked(recorders(hf, tox, detach=True)):
                m_toxic[i] = toxic_log_mass(hf(torch.tensor([list(toxic)])).logits[:, -1], token_ids)[0]
            with hooked(recorders(hf, ben, detach=True)):
                m_benign[i] = toxic_log_mass(hf(torch.tensor([list(benign)])).logits[:, -1], token_ids)[0]
        e0, e1 = _embed(hf, benign), _embed(hf, toxic)
        total: dict[Any, Tensor] = {}
        for k in range(steps):
            alpha = (k + 0.5) / steps
            acts: Acts = {}
            with torch.enable_grad(), hooked(recorders(hf, acts, detach=False)):
                embeds = (e0 + alpha * (e1 - e0)).requires_grad_(True)
                logits = hf(inputs_embeds=embeds).logits[:, -1]
                m = toxic_log_mass(logits, token_ids)[0]
                keys = sorted(acts)
                for key, g in zip(keys, torch.autograd.grad(m, [acts[key] for key in keys])):
                    total[key] = total.get(key, 0) + g.double() / steps
        for j, cell in enumerate(cs):
            key, index = _key(cell), _select(cell, d_head)
            patched[i, j] = m_benign[i] + (total[key] * (tox[key] - ben[key]).double())[index].sum()
    return RefResult([c.name for c in cs], patched.reshape(len(pairs), *shape), m_toxic, m_benign)
