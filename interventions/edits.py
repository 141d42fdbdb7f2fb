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

Every input is validated (component names, modes, sizes, NaN/inf, reference sets) before the model
is touched; failures raise :class:`~lens.errors.ToxlensError`.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Sequence
from contextlib import ExitStack

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from lens.components import Component, parse_component
from lens.errors import ToxlensError
from lens.hooks import attach, attn_out_name, keepers, mlp_out_name, resid_post_name, resid_pre_name, z_name
from lens.model import LensModel
from patching.result import PatchResult

Components = Sequence[str] | PatchResult
Reference = Sequence[str | Int[Tensor, "pos"] | Int[Tensor, "batch pos"]]
ABLATION_MODES = ("zero", "mean", "resample")
DIRECTION_MODES = ("project", "subtract")
SITES = {
    "mlp": mlp_out_name,
    "attn": attn_out_name,
    "resid_pre": resid_pre_name,
    "resid_post": resid_post_name,
}

_ACTIVE: weakref.WeakKeyDictionary[nn.Module, list[Edit]] = weakref.WeakKeyDictionary()


class Edit:
    """A reversible edit: a context manager and a handle with :meth:`undo`."""

    def __init__(
        self,
        model: LensModel,
        description: str,
        restore: Callable[[], None],
        params: Sequence[nn.Parameter] = (),
    ) -> None:
        self.model, self.description = model, description
        self._restore: Callable[[], None] | None = restore
        self._params = {id(p) for p in params}
        self.n_changed = 0  # parameter entries a weight edit changed (0 for hook edits)
        self.n_units = 0  # neurons / rows / components the edit acts on, where the edit counts them
        _ACTIVE.setdefault(model.bridge, []).append(self)

    @property
    def active(self) -> bool:
        return self._restore is not None

    def undo(self) -> None:
        """Restore the model; a no-op when already undone."""
        if self._restore is None:
            return
        stack = _ACTIVE.get(self.model.bridge, [])
        later = stack[stack.index(self) + 1 :]
        blocking = [e for e in later if e._params & self._params]
        if blocking:
            raise ToxlensError(
                f"cannot undo edit {self.description!r}: expected the later edits on the same weights to "
                f"be undone first, found still active {[e.description for e in blocking]}"
            )
        restore, self._restore = self._restore, None
        stack.remove(self)
        restore()

    def __enter__(self) -> Edit:
        return self

    def __exit__(self, *exc: object) -> None:
        self.undo()

    def __repr__(self) -> str:
        return f"Edit({self.description!r}, active={self.active})"


# -- validation --------------------------------------------------------------------------------
def resolve_components(model: LensModel, components: Components, top_k: int = 10) -> list[Component]:
    """Parse and check component names (heads ``L5H3`` and MLPs ``L7.mlp`` only, no positions)."""
    names = list(components.top_k(top_k)["name"]) if isinstance(components, PatchResult) else components
    if isinstance(names, str):
        names = [names]
    if not names:
        raise ToxlensError("expected at least one component name (e.g. 'L5H3' or 'L7.mlp'), got none")
    out = []
    for name in names:
        if not isinstance(name, str):
            raise ToxlensError(f"component {name!r}: expected a name such as 'L5H3' or 'L7.mlp'")
        comp = parse_component(name, model.n_layers, model.n_heads)
        if comp.kind not in ("head", "mlp") or comp.pos is not None:
            raise ToxlensError(f"component {name!r}: expected a whole head ('L5H3') or MLP ('L7.mlp')")
        out.append(comp)
    return out


def _finite(value: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ToxlensError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _unit(model: LensModel, direction: Tensor, normalise: bool = True) -> Tensor:
    d_model = model.info.d_model
    if not isinstance(direction, Tensor) or direction.shape != (d_model,):
        shape = tuple(direction.shape) if isinstance(direction, Tensor) else type(direction).__name__
        raise ToxlensError(f"direction must be a tensor of shape ({d_model},) (d_model), got {shape}")
    d = direction.detach().double().cpu()
    if not torch.isfinite(d).all():
        raise ToxlensError(f"direction has {int((~torch.isfinite(d)).sum())} non-finite (NaN/inf) entries")
    norm = d.norm()
    if norm == 0:
        raise ToxlensError("direction is the zero vector; expected a non-zero direction")
    return d / norm if normalise else d


def _check_layer(model: LensModel, layer: int) -> None:
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < model.n_layers:
        raise ToxlensError(f"layer must be an int in [0, {model.n_layers}), got {layer!r}")


def _hook_name(comp: Component) -> str:
    return z_name(comp.layer) if comp.kind == "head" else mlp_out_name(comp.layer)


def _hook_edit(
    model: LensModel, description: str, hooks: list[tuple[str, Callable[[Tensor], Tensor]]]
) -> Edit:
    stack = ExitStack()
    stack.enter_context(attach(model.bridge, hooks))
    return Edit(model, description, stack.close)


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


# -- weight edits ------------------------------------------------------------------------------
def output_weights(model: LensModel, comp: Component) -> tuple[nn.Parameter, nn.Parameter | None, int]:
    """Weight, bias and output (d_model) axis of the HF module writing ``comp`` into the residual stream.

    Found through the bridge: ``blocks[l].attn.o`` (heads: ``o_proj`` / GPT-2 ``attn.c_proj``) and
    ``blocks[l].mlp.out`` (MLPs: ``down_proj`` / GPT-2 ``mlp.c_proj``), their ``original_component``.
    ``nn.Linear`` stores ``[out, in]`` (axis 0), GPT-2's ``Conv1D`` ``[in, out]`` (axis 1).
    """
    block = model.blocks[comp.layer]
    wrapper = getattr(block.attn, "o", None) if comp.kind == "head" else getattr(block.mlp, "out", None)
    module = getattr(wrapper, "original_component", None)
    weight = getattr(module, "weight", None)
    if not isinstance(weight, nn.Parameter) or weight.ndim != 2:
        raise ToxlensError(
            f"component {comp.name}: expected an output projection with a 2-D weight under the bridge's "
            f"block {comp.layer}, found {type(module).__name__}"
        )
    if isinstance(module, nn.Linear):
        axis = 0
    elif type(module).__name__ == "Conv1D":
        axis = 1
    else:
        raise ToxlensError(
            f"component {comp.name}: expected nn.Linear or Conv1D, got {type(module).__name__}"
        )
    if weight.shape[axis] != model.info.d_model:
        raise ToxlensError(
            f"component {comp.name}: output axis of {type(module).__name__} has size {weight.shape[axis]}, "
            f"expected d_model={model.info.d_model}"
        )
    bias = getattr(module, "bias", None)
    return weight, bias if isinstance(bias, nn.Parameter) else None, axis


def project_out_weights(
    model: LensModel,
    components: Components,
    direction: Float[Tensor, "d_model"],
    top_k: int = 10,
) -> Edit:
    """Remove ``direction`` from what the components write: ``W ← W − d̂(d̂ᵀW)`` on their output weights.

    A head's part is the ``d_head`` input rows (Conv1D) / columns (Linear) of the output projection
    that belong to it; the projection's bias is shared by all heads and left alone. An MLP's whole
    output weight and its bias (if any) are projected. No hooks; the original tensors are saved and
    copied back on undo (bit-identical).
    """
    comps = resolve_components(model, components, top_k)
    d = _unit(model, direction)
    targets = [(c, *output_weights(model, c)) for c in comps]
    params = {id(p): p for _, w, b, _ax in targets for p in (w, b) if p is not None}
    saved = {k: p.detach().clone() for k, p in params.items()}

    @torch.no_grad()
    def restore() -> None:
        for k, p in params.items():
            p.copy_(saved[k])

    dh = model.info.d_head
    try:
        with torch.no_grad():
            for c, weight, bias, axis in targets:
                w = weight if axis == 0 else weight.T  # a view [d_model, in]
                cols = slice(None) if c.head is None else slice(c.head * dh, (c.head + 1) * dh)
                w[:, cols] = _project(w[:, cols], d)
                if c.kind == "mlp" and bias is not None:
                    bias.copy_(_project(bias[:, None], d)[:, 0])
    except BaseException:
        restore()
        raise
    return Edit(
        model, f"project_out_weights({', '.join(c.name for c in comps)})", restore, list(params.values())
    )


def _project(
    w: Float[Tensor, "d_model n"],
    d: Float[Tensor, "d_model"],
) -> Float[Tensor, "d_model n"]:
    w64, d64 = w.double(), d.to(w.device)
    return (w64 - d64[:, None] * (d64 @ w64)[None]).to(w.dtype)


def active_edits(model: LensModel) -> list[Edit]:
    """The edits currently active on ``model``, oldest first."""
    return list(_ACTIVE.get(model.bridge, []))


def undo_all(model: LensModel) -> None:
    """Undo every active edit of ``model``, newest first."""
    for e in reversed(active_edits(model)):
        e.undo()
