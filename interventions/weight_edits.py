"""Weight edits of whole components: :func:`project_out_weights` (see :mod:`interventions.edits`)."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor, nn

from interventions.edit_base import Components, Edit, _unit, resolve_components
from lens.components import Component
from lens.errors import ToxlensError
from lens.model import LensModel


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
