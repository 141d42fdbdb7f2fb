"""Relevance patching (RelP, Jafari et al. 2025): attribution patching with LRP propagation rules.

The forward pass is unchanged; only the backward pass follows the LRP rules, applied through TransformerLens hook points of the bridge (no fork of the
model code). ``g_c`` in :mod:`patching.attribution` becomes the propagation coefficient of cell c:

* **LN-rule** (LayerNorm and RMSNorm): the normalisation scale is detached —
  ``blocks.{l}.ln1.hook_scale``, ``blocks.{l}.ln2.hook_scale`` and ``ln_final.hook_scale`` return
  ``scale.detach()``, so the norm is linear in its input in the backward pass (GPT-2's centring stays);
* **identity rule** (the MLP activation function): ``act(x)`` passes ``x · (act(x)/x).detach()``, with
  ``x`` stabilised as ``x + (1[x = 0] + sign(x))·1e-6``. GPT-2: ``blocks.{l}.mlp.hook_post`` is replaced
  by ``post.detach() + (pre − pre.detach()) · (post / x̃).detach()`` with ``pre`` from
  ``blocks.{l}.mlp.hook_pre``;
* **half rule** (the gated product ``act(gate)·up`` of Llama-style MLPs): the product's backward is
  halved and split between its two factors; with the identity rule on ``act``,
  ``∂/∂gate = ½ · up · act(gate)/gatẽ`` and ``∂/∂up = ½ · act(gate)`` (``gate`` from
  ``blocks.{l}.mlp.hook_pre``, ``up`` from ``blocks.{l}.mlp.hook_pre_linear``, replacing
  ``blocks.{l}.mlp.hook_post``);
* **AH-rule** (optional, ``ah_rule=True``): the attention pattern is detached at
  ``blocks.{l}.attn.hook_pattern`` (attention acts as a fixed linear map of the values).

The forward values are those of the plain forward up to float rounding (≤ 1e-6 on the test models):
with a hook on ``hook_scale`` the bridge rebuilds the norm's output from the hooked values.
Linear layers use the 0-rule (plain gradient × input), which is what the backward already does. Cost:
the same as attribution patching (2 forwards + 1 backward).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from lens.errors import ToxlensError
from lens.hooks import HookFn
from lens.metrics import Metric
from lens.model import LensModel
from patching.attribution import gradient_method, hooked_gradients
from patching.result import PatchResult

DEFINITION = (
    "attribution patching with g_c = the LRP propagation coefficient of cell c at the benign run "
    "(LN-rule, identity rule on the MLP activation, half rule on gated products[, AH-rule])"
)
RULES = ("LN-rule", "identity-rule", "half-rule", "AH-rule")


def stabilize(x: Tensor, eps: float = 1e-6) -> Tensor:
    return x + ((x == 0).to(x.dtype) + x.sign()) * eps


def _detach(t: Tensor) -> Tensor:
    return t.detach()


def _keep(store: dict[str, Tensor], key: str) -> HookFn:
    def keep(t: Tensor) -> None:
        store[key] = t

    return keep


def _identity_rule(store: dict[str, Tensor]) -> HookFn:
    def rule(post: Tensor) -> Tensor:
        pre = store.pop("pre")
        ratio = (post / stabilize(pre)).detach()
        return post.detach() + (pre - pre.detach()) * ratio

    return rule


def _gated_rule(store: dict[str, Tensor], act: Callable[[Tensor], Tensor]) -> HookFn:
    def rule(post: Tensor) -> Tensor:
        gate, up = store.pop("pre"), store.pop("lin")
        a = act(gate.detach())
        ratio = a / stabilize(gate.detach())
        return post.detach() + 0.5 * (ratio * (gate - gate.detach()) * up.detach() + a * (up - up.detach()))

    return rule


def _activation(model: LensModel) -> Callable[[Tensor], Tensor]:
    from transformers.activations import ACT2FN

    config = model.bridge.original_model.config
    name = getattr(config, "hidden_act", None) or getattr(config, "activation_function", None)
    if name not in ACT2FN:
        raise ToxlensError(
            f"RelP: the MLP activation {name!r} of {model.spec!r} is unknown; expected one of transformers' ACT2FN"
        )
    fn: Callable[[Tensor], Tensor] = ACT2FN[name]
    return fn


def relp_hooks(model: LensModel, ah_rule: bool = False) -> list[tuple[str, HookFn]]:
    """Hooks that make the backward pass follow the RelP rules (fresh per forward pass)."""
    names = model.bridge.hook_dict
    gated = "blocks.0.mlp.hook_pre_linear" in names
    act = _activation(model) if gated else None
    hooks: list[tuple[str, HookFn]] = [("ln_final.hook_scale", _detach)]
    for layer in range(model.n_layers):
        b = f"blocks.{layer}"
        store: dict[str, Tensor] = {}
        hooks += [(f"{b}.ln1.hook_scale", _detach), (f"{b}.ln2.hook_scale", _detach)]
        hooks.append((f"{b}.mlp.hook_pre", _keep(store, "pre")))
        if act is not None:
            hooks.append((f"{b}.mlp.hook_pre_linear", _keep(store, "lin")))
            hooks.append((f"{b}.mlp.hook_post", _gated_rule(store, act)))
        else:
            hooks.append((f"{b}.mlp.hook_post", _identity_rule(store)))
        if ah_rule:
            hooks.append((f"{b}.attn.hook_pattern", _detach))
    missing = [n for n, _ in hooks if n not in names]
    if missing:
        raise ToxlensError(
            f"RelP needs the hook points {missing[:4]} (of {len(missing)} missing) in {model.spec!r}; "
            "expected a decoder with ln1/ln2/ln_final scale hooks and mlp.hook_pre/hook_post"
        )
    return hooks


def rules_used(model: LensModel, ah_rule: bool) -> list[str]:
    gated = "blocks.0.mlp.hook_pre_linear" in model.bridge.hook_dict
    return [r for r in RULES if (r != "half-rule" or gated) and (r != "AH-rule" or ah_rule)]


def relevance_patching(
    model: LensModel,
    pairs: Any,
    metric: Metric,
    target: str = "components",
    ah_rule: bool = False,
    **_: Any,
) -> PatchResult:
    """RelP estimate over ``target`` (same targets, cells and outputs as attribution patching)."""
    extra = {"rules": rules_used(model, ah_rule), "ah_rule": ah_rule, "stabilizer": 1e-6}
    gradients = hooked_gradients(lambda m: relp_hooks(m, ah_rule))
    return gradient_method("relp", gradients, DEFINITION, model, pairs, metric, target, extra)
