"""Hook names and owned hooks.

Every temporary hook goes through :func:`attach`: it registers plain ``torch`` forward hooks on the
TransformerLens ``HookPoint`` modules and removes exactly those handles in ``finally`` — also when a
hook or the body raises, also when contexts nest. Hooks added by anybody else are never touched.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn

from lens.errors import ToxlensError

HookFn = Callable[[Tensor], Tensor | None]


def z_name(layer: int) -> str:
    """Per-head attention output before W_O: ``[batch, pos, head_index, d_head]``."""
    return f"blocks.{layer}.attn.hook_z"


def mlp_out_name(layer: int) -> str:
    """MLP output written to the residual stream: ``[batch, pos, d_model]``."""
    return f"blocks.{layer}.hook_mlp_out"


def resid_pre_name(layer: int) -> str:
    """Residual stream entering block ``layer``: ``[batch, pos, d_model]``."""
    return f"blocks.{layer}.hook_resid_pre"


def resid_post_name(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_post"


def attn_out_name(layer: int) -> str:
    return f"blocks.{layer}.hook_attn_out"


def hook_point(model: Any, name: str) -> Any:
    """The HookPoint called ``name``; unknown names raise with the closest known names."""
    hook_dict = model.hook_dict
    if name not in hook_dict:
        close = difflib.get_close_matches(name, list(hook_dict), n=3)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise ToxlensError(f"unknown hook name {name!r} (model has {len(hook_dict)} hook points{hint})")
    return hook_dict[name]


@contextmanager
def attach(model: Any, hooks: Sequence[tuple[str, HookFn]]) -> Iterator[None]:
    """Attach forward hooks ``fn(activation) -> replacement | None`` for the duration of the block.

    Hooks go through ``HookPoint.add_hook`` so TransformerLens's shape conversions apply (``hook_z`` is
    seen as ``[batch, pos, head_index, d_head]``); on exit exactly the handles added here are removed.
    All names are resolved before any hook is added, so an unknown name leaves the model untouched.
    """
    points = [(hook_point(model, name), fn) for name, fn in hooks]
    added: list[tuple[Any, Any]] = []
    try:
        for point, fn in points:
            added.append((point, point.add_hook(_adapt(fn), dir="fwd")))
        yield
    finally:
        for point, handle in reversed(added):
            handle.hook.remove()
            point.fwd_hooks = [h for h in point.fwd_hooks if h is not handle]


def _adapt(fn: HookFn) -> Callable[..., Tensor | None]:
    def hook(activation: Tensor, hook: Any = None) -> Tensor | None:
        return fn(activation)

    return hook


def count_hooks(model: nn.Module) -> int:
    """Total number of forward, pre-forward and backward hooks on every submodule (for hygiene tests)."""
    total = 0
    for module in model.modules():
        total += len(module._forward_hooks) + len(module._forward_pre_hooks)
        total += len(module._backward_hooks) + len(getattr(module, "_backward_pre_hooks", {}))
        total += len(getattr(module, "fwd_hooks", [])) + len(getattr(module, "bwd_hooks", []))
    return total


def keepers(
    acts: dict[str, Tensor], hook_names: Sequence[str], keep_graph: bool = False
) -> list[tuple[str, HookFn]]:
    """Hooks for :func:`attach` that store each named activation into ``acts``.

    Detached copies by default; with ``keep_graph`` the (shape-converted) tensor itself is stored and
    handed back, so it is the tensor downstream layers use and gradients can be taken with respect to it.
    """

    def keeper(name: str) -> HookFn:
        def keep(t: Tensor) -> Tensor | None:
            if keep_graph:
                acts[name] = t
                return t
            acts[name] = t.detach().clone()
            return None

        return keep

    return [(n, keeper(n)) for n in hook_names]
