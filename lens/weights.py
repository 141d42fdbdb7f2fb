"""Where the weights live: MLP neurons (names, activations, weights) and each head's output weights.

A neuron ``L{l}.mlp.n{i}`` is unit ``i`` of layer ``l``'s MLP hidden layer. Its **activation** is the
coefficient that multiplies its value vector in the MLP output, i.e. the input of the output projection:
``gelu(x·W_in + b_in)_i`` for GPT-2, ``act(x·W_gate)_i · (x·W_up)_i`` for gated (Llama-style) MLPs. It is
read at the hook ``blocks.{l}.mlp.out.hook_in`` (the input of ``c_proj`` / ``down_proj``), which is the
same tensor for both kinds of MLP. Its **value vector** is row ``i`` of the output weight
(``[d_mlp, d_model]`` orientation): what the neuron adds to the residual stream per unit of activation.

:func:`mlp_weights` finds the HF modules behind the bridge and reports every weight in one orientation
(``[d_mlp, d_model]`` *views* of the stored tensors), so edits write through to the real parameters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from jaxtyping import Float
from torch import Tensor, nn

from lens.errors import ToxlensError
from lens.model import LensModel

_NEURON = re.compile(r"^L(?P<layer>\d+)\.mlp(?:\.n|:)(?P<neuron>\d+)$")


def neuron_act_name(layer: int) -> str:
    """Hook holding the neuron activations of ``layer``: ``[batch, pos, d_mlp]``."""
    return f"blocks.{layer}.mlp.out.hook_in"


def neuron_name(layer: int, neuron: int) -> str:
    return f"L{layer}.mlp.n{neuron}"


def parse_neuron(name: str, model: LensModel | None = None) -> tuple[int, int]:
    """``'L7.mlp.n123'`` (or ``'L7.mlp:123'``) → ``(7, 123)``; with ``model`` also check it exists."""
    m = _NEURON.match(name.strip()) if isinstance(name, str) else None
    if not m:
        raise ToxlensError(f"unknown neuron name {name!r}; expected e.g. 'L7.mlp.n123'")
    layer, neuron = int(m["layer"]), int(m["neuron"])
    if model is not None:
        if layer >= model.n_layers:
            raise ToxlensError(f"neuron {name!r}: layer {layer} does not exist (model has {model.n_layers})")
        d_mlp = mlp_weights(model, layer).d_mlp
        if neuron >= d_mlp:
            raise ToxlensError(f"neuron {name!r}: expected an index < d_mlp={d_mlp}, got {neuron}")
    return layer, neuron


@dataclass
class MLPWeights:
    """Views of one MLP's weights, all ``[d_mlp, d_model]`` (``out``) or ``[d_mlp, d_model]`` (inputs).

    ``inputs``: the input projections whose rows feed each neuron (``[W_in]`` for GPT-2,
    ``[W_gate, W_up]`` for gated MLPs) with ``input_biases`` (``[d_mlp]`` or None);
    ``out``: the value vectors; ``out_bias``: the output projection's bias (``[d_model]`` or None).
    ``params``: every parameter behind those views (for saving and restoring).
    """

    layer: int
    inputs: list[Float[Tensor, "d_mlp d_model"]]
    input_biases: list[Tensor | None]
    out: Float[Tensor, "d_mlp d_model"]
    out_bias: Tensor | None
    params: list[nn.Parameter]
    gated: bool

    @property
    def out_params(self) -> list[nn.Parameter]:
        """The output projection's weight (and bias): what value-vector edits change."""
        return self.params[: 2 if self.out_bias is not None else 1]

    @property
    def d_mlp(self) -> int:
        return int(self.out.shape[0])


def _linear(
    module: object, what: str, layer: int, d_model: int, d_model_axis: str
) -> tuple[Tensor, Tensor | None, nn.Parameter]:
    weight = getattr(module, "weight", None)
    if not isinstance(weight, nn.Parameter) or weight.ndim != 2:
        raise ToxlensError(f"layer {layer} MLP {what}: expected a 2-D weight, found {type(module).__name__}")
    if isinstance(module, nn.Linear):  # stored [out_features, in_features]
        view = weight if d_model_axis == "in" else weight.T
    elif type(module).__name__ == "Conv1D":  # stored [in, out]
        view = weight.T if d_model_axis == "in" else weight
    else:
        raise ToxlensError(
            f"layer {layer} MLP {what}: expected nn.Linear or Conv1D, got {type(module).__name__}"
        )
    if view.shape[1] != d_model:
        raise ToxlensError(
            f"layer {layer} MLP {what}: expected a d_model={d_model} axis, got weight shape {tuple(weight.shape)}"
        )
    bias = getattr(module, "bias", None)
    return view, bias if isinstance(bias, nn.Parameter) else None, weight


def mlp_weights(model: LensModel, layer: int) -> MLPWeights:
    """The weights of layer ``layer``'s MLP as ``[d_mlp, d_model]`` views (see :class:`MLPWeights`)."""
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < model.n_layers:
        raise ToxlensError(f"layer must be an int in [0, {model.n_layers}), got {layer!r}")
    mlp = model.blocks[layer].mlp
    d_model = model.info.d_model

    def orig(name: str) -> object:
        wrapper = getattr(mlp, name, None)
        return getattr(wrapper, "original_component", None)

    out_mod = orig("out")
    if out_mod is None:
        raise ToxlensError(f"layer {layer}: the bridge's MLP has no output projection 'out'")
    out, out_bias, w_out = _linear(out_mod, "output projection", layer, d_model, "out")
    gate_mod = orig("gate")
    names = ["gate", "in"] if gate_mod is not None else ["in"]
    inputs: list[Tensor] = []
    biases: list[Tensor | None] = []
    params: list[nn.Parameter] = [w_out] + ([out_bias] if isinstance(out_bias, nn.Parameter) else [])
    for name in names:
        module = orig(name)
        if module is None:
            raise ToxlensError(f"layer {layer}: the bridge's MLP has no input projection {name!r}")
        view, bias, w = _linear(module, f"input projection {name!r}", layer, d_model, "in")
        if view.shape[0] != out.shape[0]:
            raise ToxlensError(
                f"layer {layer} MLP: input projection {name!r} has {view.shape[0]} units, output has {out.shape[0]}"
            )
        inputs.append(view)
        biases.append(bias)
        params += [w] + ([bias] if isinstance(bias, nn.Parameter) else [])
    return MLPWeights(layer, inputs, biases, out, out_bias, params, gated=gate_mod is not None)


def head_out_weights(model: LensModel, layer: int) -> Float[Tensor, "head_index d_head d_model"]:
    """A view ``[n_heads, d_head, d_model]`` of layer ``layer``'s attention output projection: head
    ``h`` writes ``z_h @ W[h]`` into the residual stream (the projection's bias is shared by all heads)."""
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < model.n_layers:
        raise ToxlensError(f"layer must be an int in [0, {model.n_layers}), got {layer!r}")
    module = getattr(getattr(model.blocks[layer].attn, "o", None), "original_component", None)
    info = model.info
    view, _bias, _w = _linear(module, "attention output projection", layer, info.d_model, "out")
    if view.shape[0] != info.n_heads * info.d_head:
        raise ToxlensError(
            f"layer {layer}: attention output projection has {view.shape[0]} inputs, "
            f"expected n_heads·d_head = {info.n_heads * info.d_head}"
        )
    return view.reshape(info.n_heads, info.d_head, info.d_model)
