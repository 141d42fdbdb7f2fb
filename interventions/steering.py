"""Steering vectors and where they are added.

A :class:`Steer` adds ``scale × vector`` to the residual stream ``blocks.{layer}.hook_resid_pre``
(or ``hook_resid_post``) at the prompt positions, the generated positions, or both. It is applied by
:func:`interventions.generate.generate` (with the KV cache in use) and, outside generation, by
:func:`steering` (a reversible :class:`~interventions.edits.Edit` that steers every position, e.g. for
perplexity).

Vectors, each a plain ``[d_model]`` float tensor:

* :func:`mean_diff_vector` — mean residual over toxic texts minus mean over benign texts;
* :func:`probe_vector` — a trained probe's unit direction (toward "toxic");
* :func:`value_vector` — what an MLP neuron writes (``L7.mlp:123``: row 123 of the MLP's output
  weight in residual space), as in work on GPT-2's toxic value vectors;
* :func:`load_vector` / :func:`save_vector` — ``.safetensors`` files holding one tensor ``vector``.

Steering *away* from toxicity uses a negative scale with a toxic-pointing vector.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from safetensors.torch import load_file, save_file
from torch import Tensor

from interventions.edits import Edit, _hook_edit, output_weights
from lens.components import parse_component
from lens.errors import ToxlensError
from lens.hooks import resid_post_name, resid_pre_name
from lens.io import atomic_file
from lens.model import LensModel
from lens.probe import Probe, collect_residuals

STEER_SITES = {"resid_pre": resid_pre_name, "resid_post": resid_post_name}
STEER_POSITIONS = ("prompt", "generated", "all")


@dataclass(frozen=True)
class Steer:
    """Add ``scale × vector`` at ``blocks.{layer}.hook_{site}`` at the chosen ``positions``."""

    vector: Float[Tensor, "d_model"]
    layer: int
    scale: float = 1.0
    positions: str = "all"
    site: str = "resid_pre"

    def check(self, model: LensModel) -> None:
        """Validate against ``model``; raises before anything is touched."""
        if self.site not in STEER_SITES:
            raise ToxlensError(f"unknown steering site {self.site!r}; expected one of {sorted(STEER_SITES)}")
        if self.positions not in STEER_POSITIONS:
            raise ToxlensError(
                f"unknown steering positions {self.positions!r}; expected one of {STEER_POSITIONS}"
            )
        if (
            isinstance(self.layer, bool)
            or not isinstance(self.layer, int)
            or not 0 <= self.layer < model.n_layers
        ):
            raise ToxlensError(f"steering layer must be an int in [0, {model.n_layers}), got {self.layer!r}")
        if not math.isfinite(float(self.scale)):
            raise ToxlensError(f"steering scale must be finite, got {self.scale!r}")
        check_vector(model, self.vector, "steering vector")

    @property
    def hook_name(self) -> str:
        return STEER_SITES[self.site](self.layer)

    def describe(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "scale": float(self.scale),
            "positions": self.positions,
            "site": self.site,
            "vector_norm": float(self.vector.float().norm()),
        }


def check_vector(model: LensModel, vector: Tensor, what: str) -> Float[Tensor, "d_model"]:
    d = model.info.d_model
    if not isinstance(vector, Tensor) or vector.ndim != 1 or vector.shape[0] != d:
        shape = tuple(vector.shape) if isinstance(vector, Tensor) else type(vector).__name__
        raise ToxlensError(f"{what} must have shape ({d},) (d_model), got {shape}")
    if not torch.isfinite(vector).all():
        raise ToxlensError(f"{what} contains NaN or inf values")
    return vector


def steering(model: LensModel, steers: Steer | Sequence[Steer]) -> Edit:
    """A reversible edit adding every steer at **every** position of every forward (``positions`` is
    ignored: outside generation there is no prompt/generated split). Used for perplexity under steering."""
    items = [steers] if isinstance(steers, Steer) else list(steers)
    for s in items:
        s.check(model)

    def adder(s: Steer) -> Any:
        v = (s.scale * s.vector.float()).to(model.device)

        def hook(x: Tensor) -> Tensor:
            return x + v.to(x.dtype)

        return hook

    hooks = [(s.hook_name, adder(s)) for s in items]
    desc = ", ".join(f"{s.scale:g}@{s.hook_name}" for s in items)
    return _hook_edit(model, f"steer({desc})", hooks)


# -- vector sources ----------------------------------------------------------------------------
def mean_diff_vector(
    model: LensModel,
    toxic: Sequence[str],
    benign: Sequence[str],
    layer: int,
    site: str = "resid_pre",
    pooling: str = "mean",
    batch_size: int = 16,
    prepend_bos: bool = False,
) -> Float[Tensor, "d_model"]:
    """``mean(toxic) − mean(benign)`` of the residual at ``blocks.{layer}.hook_{site}``, each text pooled
    over its positions (``mean``) or taken at its last token (``last``)."""
    if site not in STEER_SITES:
        raise ToxlensError(f"unknown site {site!r}; expected one of {sorted(STEER_SITES)}")
    if not toxic or not benign:
        raise ToxlensError(
            f"mean_diff_vector needs toxic and benign texts, got {len(toxic)} toxic and {len(benign)} benign"
        )
    feats = collect_residuals(
        model, [*toxic, *benign], [layer], batch_size, hook=site, pooling=pooling, prepend_bos=prepend_bos
    )[layer]
    return (feats[: len(toxic)].mean(0) - feats[len(toxic) :].mean(0)).float()


def probe_vector(probe: Probe) -> Float[Tensor, "d_model"]:
    """The probe's unit direction in residual space (the probe logit grows along it)."""
    return probe.direction.detach().float().clone()


def value_vector(model: LensModel, name: str) -> Float[Tensor, "d_model"]:
    """``"L7.mlp:123"`` → what neuron 123 of layer 7's MLP writes per unit activation (its output-weight
    row in residual space)."""
    comp_name, sep, idx = name.partition(":")
    if not sep or not idx.strip().isdigit():
        raise ToxlensError(f"value vector {name!r}: expected 'L<layer>.mlp:<neuron>', e.g. 'L7.mlp:123'")
    comp = parse_component(comp_name, model.n_layers, model.n_heads)
    if comp.kind != "mlp":
        raise ToxlensError(f"value vector {name!r}: only MLP neurons have value vectors, got {comp.kind}")
    weight, _bias, axis = output_weights(model, comp)
    w = weight.detach() if axis == 1 else weight.detach().T  # [d_mlp, d_model]
    neuron = int(idx)
    if neuron >= w.shape[0]:
        raise ToxlensError(f"value vector {name!r}: neuron {neuron} does not exist (MLP has {w.shape[0]})")
    return w[neuron].float().clone()


def vector_from_spec(spec: str, model: LensModel, probe: Probe | None = None) -> Float[Tensor, "d_model"]:
    """A steering vector named the way the CLI names it: ``probe`` (the probe's direction),
    ``FILE.safetensors`` (:func:`load_vector`) or ``L7.mlp:123`` (:func:`value_vector`)."""
    if spec == "probe":
        if probe is None:
            raise ToxlensError("steering vector 'probe' needs a probe (--probe DIR)")
        return probe_vector(probe)
    if spec.endswith(".safetensors"):
        return load_vector(spec, model)
    return value_vector(model, spec)


def save_vector(vector: Tensor, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    out = Path(path)
    if out.suffix != ".safetensors":
        raise ToxlensError(f"vector files are .safetensors, got {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    t = {"vector": vector.detach().float().contiguous().cpu()}
    atomic_file(out, lambda p: save_file(t, p, metadata=metadata or {}))
    return out


def load_vector(path: str | Path, model: LensModel | None = None) -> Float[Tensor, "d_model"]:
    """Load a vector saved by :func:`save_vector` (one tensor named ``vector``)."""
    p = Path(path)
    if not p.is_file():
        raise ToxlensError(f"vector file {p} does not exist")
    try:
        tensors = load_file(str(p))
    except Exception as err:  # safetensors raises several types for a bad file
        raise ToxlensError(f"vector file {p} is not a readable safetensors file: {err}") from err
    if "vector" not in tensors:
        raise ToxlensError(f"vector file {p}: expected a tensor named 'vector', found {sorted(tensors)}")
    v = tensors["vector"].float()
    return check_vector(model, v, f"vector in {p}") if model is not None else v
