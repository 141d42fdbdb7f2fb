"""The reversible :class:`Edit` (context manager and handle), the registry of active edits per model,
and the input checks every edit shares. Hook edits live in :mod:`interventions.edits`, weight edits of
whole components in :mod:`interventions.weight_edits`, neuron edits in :mod:`interventions.neuron_edits`."""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Sequence
from contextlib import ExitStack

import torch
from torch import Tensor, nn

from lens.components import Component, parse_component
from lens.errors import ToxlensError
from lens.hooks import attach, mlp_out_name, z_name
from lens.model import LensModel
from patching.result import PatchResult

Components = Sequence[str] | PatchResult

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


def active_edits(model: LensModel) -> list[Edit]:
    """The edits currently active on ``model``, oldest first."""
    return list(_ACTIVE.get(model.bridge, []))


def undo_all(model: LensModel) -> None:
    """Undo every active edit of ``model``, newest first."""
    for e in reversed(active_edits(model)):
        e.undo()
