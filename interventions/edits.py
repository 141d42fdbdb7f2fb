"""Reversible edits of a :class:`~lens.model.LensModel`: ablation, scaling, direction removal.

Every function returns an :class:`Edit`, usable both ways::

    with ablate(model, ["L1H2"]):          # undone on exit, also when the body raises
        ...
    h = scale(model, ["L3.mlp"], 0.5)      # a handle that outlives any block
    ...
    h.undo()                               # a second undo() is a no-op

* Hook edits (:func:`ablate`, :func:`scale`, :func:`subtract_direction`) add owned hooks through
  :func:`lens.hooks.attach` (kept open in an ``ExitStack``); undo removes exactly those hooks.
  Heads are edited on ``blocks.{l}.attn.hook_z`` (``[batch, pos, head, d_head]``, before ``W_O``),
  MLPs on ``blocks.{l}.hook_mlp_out``.
* :func:`project_out_weights` edits parameters in place; the original tensors are saved and copied
  back on undo, bit-identical. Undoing a weight edit while a later, still active weight edit touches
  the same parameter would corrupt it, so that raises (undo the later edit first); all other edits
  may be undone in any order.

The :class:`Edit` class, the active-edit registry and the shared checks are in
:mod:`interventions.edit_base`; :func:`project_out_weights` and :func:`output_weights` in
:mod:`interventions.weight_edits` (both re-exported here); neuron edits in :mod:`interventions.neuron_edits`.

Every input is validated (component names, modes, sizes, NaN/inf, reference sets) before the model
is touched; failures raise :class:`~lens.errors.ToxlensError`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interventions.edit_base import (
    Components,
    Edit,
    _check_layer,
    _finite,
    _hook_edit,
    _hook_name,
    _unit,
    active_edits,
    resolve_components,
    undo_all,
)
from interventions.weight_edits import output_weights, project_out_weights
from lens.components import Component
from lens.errors import ToxlensError
from lens.hooks import attach, attn_out_name, keepers, mlp_out_name, resid_post_name, resid_pre_name
from lens.model import LensModel

__all__ = [
    "ABLATION_MODES",
    "DIRECTION_MODES",
    "SITES",
    "Components",
    "Edit",
    "ablate",
    "active_edits",
    "output_weights",
    "project_out_weights",
    "resolve_components",
    "scale",
    "subtract_direction",
    "undo_all",
]

Reference = Sequence[str | Int[Tensor, "pos"] | Int[Tensor, "batch pos"]]
ABLATION_MODES = ("zero", "mean", "resample")
DIRECTION_MODES = ("project", "subtract")
SITES = {
    "mlp": mlp_out_name,
    "attn": attn_out_name,
    "resid_pre": resid_pre_name,
    "resid_post": resid_post_name,
}


# -- hook edits --------------------------------------------------------------------------------
def _replace(comp: Component, value: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """Hook replacing the component's activation ``a`` (head slice or MLP output) by ``value(a)``."""

    def hook(act: Tensor) -> Tensor:
        out = act.clone()
        if comp.kind == "head":
            out[:, :, comp.head] = value(act[:, :, comp.head])
        else:
            out[:] = value(act)
        return out

    return hook


def ablate(
    model: LensModel,
    components: Components,
    mode: str = "zero",
    reference: Reference | None = None,
    seed: int = 0,
    top_k: int = 10,
    prepend_bos: bool = False,
) -> Edit:
    """Ablate heads / MLPs (names, or the ``top_k`` cells of a :class:`PatchResult`).

    * ``zero``: the head's ``hook_z`` slice / the MLP's ``hook_mlp_out`` is set to 0;
    * ``mean``: set to the mean activation over all positions of all ``reference`` prompts (every token
      weighs the same), per head;
    * ``resample``: for each component a reference prompt is drawn (``torch.Generator`` seeded with
      ``seed``, one draw per component in the given order) and its activation is used: at position
      ``p`` the reference activation at ``p``, or at its last position when the reference is shorter.
      The same prompt is used for every row of a batch.

    ``reference`` holds strings (tokenized with ``prepend_bos``) and/or token tensors (1-D, or 2-D with
    one prompt per row). Reference activations are computed once, now, with the model as it is now
    (edits already active included).
    """
    if mode not in ABLATION_MODES:
        raise ToxlensError(f"unknown ablation mode {mode!r}; expected one of {ABLATION_MODES}")
    comps = resolve_components(model, components, top_k)
    if mode == "zero":
        if reference is not None:
            raise ToxlensError("mode 'zero' takes no reference set; expected reference=None")
        hooks = [(_hook_name(c), _replace(c, torch.zeros_like)) for c in comps]
    else:
        acts = _reference_acts(model, comps, _reference_tokens(model, reference, prepend_bos))
        if mode == "mean":
            means = [torch.cat([a[i] for a in acts]).mean(0) for i in range(len(comps))]
            hooks = [(_hook_name(c), _replace(c, _constant(m))) for c, m in zip(comps, means)]
        else:
            gen = torch.Generator().manual_seed(int(seed))
            picks = [int(torch.randint(len(acts), (1,), generator=gen)) for _ in comps]
            hooks = [
                (_hook_name(c), _replace(c, _by_position(acts[k][i])))
                for i, (c, k) in enumerate(zip(comps, picks))
            ]
    names = ", ".join(c.name for c in comps)
    return _hook_edit(model, f"ablate[{mode}]({names})", hooks)


def _constant(value: Tensor) -> Callable[[Tensor], Tensor]:
    return lambda a: value.to(a.dtype).expand_as(a)


def _by_position(ref: Tensor) -> Callable[[Tensor], Tensor]:
    def value(a: Tensor) -> Tensor:
        idx = torch.arange(a.shape[1], device=ref.device).clamp(max=ref.shape[0] - 1)
        return ref[idx].to(a.dtype).expand_as(a)

    return value


def _reference_tokens(model: LensModel, reference: Reference | None, prepend_bos: bool) -> list[Tensor]:
    if reference is None or isinstance(reference, (str, Tensor)) or len(reference) == 0:
        raise ToxlensError(
            f"mean/resample ablation needs a non-empty list of reference prompts, got {reference!r}"
        )
    rows: list[Tensor] = []
    for i, item in enumerate(reference):
        if isinstance(item, str):
            rows.append(torch.tensor(model.tokenize(item, prepend_bos), dtype=torch.long))
        elif isinstance(item, Tensor) and item.ndim in (1, 2) and not item.is_floating_point():
            rows.extend(item.reshape(-1, item.shape[-1]).long())
        else:
            raise ToxlensError(
                f"reference[{i}]: expected a string or a 1-D/2-D integer token tensor, got {item!r}"
            )
        if rows and rows[-1].numel() == 0:
            raise ToxlensError(f"reference[{i}] has no tokens; expected at least one")
    return rows


@torch.no_grad()
def _reference_acts(model: LensModel, comps: list[Component], tokens: list[Tensor]) -> list[list[Tensor]]:
    """Per reference prompt, per component: its activation ``[pos, d_head]`` (head) or ``[pos, d_model]``."""
    names = sorted({_hook_name(c) for c in comps})
    stop = max(c.layer for c in comps) + 1
    out = []
    for toks in tokens:
        seen: dict[str, Tensor] = {}
        prepared = model.prepare(toks[None].to(model.device))
        with attach(model.bridge, keepers(seen, names)):
            model.run_layers(prepared.resid, prepared, 0, stop)
        out.append(
            [seen[_hook_name(c)][0, :, c.head] if c.kind == "head" else seen[_hook_name(c)][0] for c in comps]
        )
    return out


def scale(model: LensModel, components: Components, factor: float, top_k: int = 10) -> Edit:
    """Multiply the heads' ``hook_z`` slices / the MLPs' outputs by ``factor``."""
    f = _finite(factor, "factor")
    comps = resolve_components(model, components, top_k)
    hooks = [(_hook_name(c), _replace(c, lambda a: a * f)) for c in comps]
    return _hook_edit(model, f"scale[{f:g}]({', '.join(c.name for c in comps)})", hooks)


def subtract_direction(
    model: LensModel,
    site: str,
    direction: Float[Tensor, "d_model"],
    layer: int,
    mode: str = "project",
    alpha: float = 1.0,
) -> Edit:
    """Edit a ``[batch, pos, d_model]`` activation of ``layer`` along ``direction``.

    ``site``: ``mlp`` (``hook_mlp_out``), ``attn`` (``hook_attn_out``), ``resid_pre`` or ``resid_post``.
    ``mode="project"``: ``x − alpha·(x·d̂)d̂`` (``alpha=1`` removes the component along d̂ entirely);
    ``mode="subtract"``: ``x − alpha·direction`` (the direction as given, not normalised).
    """
    if site not in SITES:
        raise ToxlensError(f"unknown site {site!r}; expected one of {sorted(SITES)}")
    if mode not in DIRECTION_MODES:
        raise ToxlensError(f"unknown direction mode {mode!r}; expected one of {DIRECTION_MODES}")
    _check_layer(model, layer)
    a = _finite(alpha, "alpha")
    d = _unit(model, direction, normalise=mode == "project").to(model.device)

    def hook(x: Tensor) -> Tensor:
        dd = d.to(x.dtype)
        return x - a * (x @ dd)[..., None] * dd if mode == "project" else x - a * dd

    return _hook_edit(model, f"{mode}_direction({site}@L{layer}, alpha={a:g})", [(SITES[site](layer), hook)])
