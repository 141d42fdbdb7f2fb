"""The patching methods, one registry: ``activation``, ``attribution``, ``relp``, ``ig``.

Every method maps ``(model, pairs, metric, target, **settings)`` to a :class:`PatchResult` over the same
cells; the gradient methods estimate the activation-patching score. ``toxlens locate --method``, the
agreement statistics and the figures all read :data:`METHODS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lens.errors import ToxlensError
from patching import activation, attribution, ig, relp
from patching.result import PatchResult


@dataclass(frozen=True)
class Method:
    name: str
    run: Callable[..., PatchResult]
    definition: str
    gradient: bool  # an estimate of activation patching from gradients
    settings: tuple[str, ...]  # keyword arguments it takes (besides model, pairs, metric, target)

    def nominal_cost(self, metadata: dict[str, Any]) -> str:
        """Passes per length group, as counted by the definition, for a result with this ``metadata``
        (the measured cost is in the timings)."""
        if self.name == "activation":
            return "1 benign + 1 toxic forward, then one resumed forward per (cell, pair)"
        if self.name == "ig":
            steps = int(metadata["steps"])
            if metadata["mode"] == "activations":
                return f"2 forwards + {steps} x (resumed forward + backward) per hook site"
            return f"2 forwards + {steps} x (forward + backward)"
        return "2 forwards + 1 backward"


METHODS: dict[str, Method] = {
    "activation": Method(
        "activation", activation.activation_patching, activation.DEFINITION, False, ("batch_size", "progress")
    ),
    "attribution": Method("attribution", attribution.attribution_patching, attribution.DEFINITION, True, ()),
    "relp": Method("relp", relp.relevance_patching, relp.DEFINITION, True, ("ah_rule",)),
    "ig": Method("ig", ig.integrated_gradients, ig.DEFINITION, True, ("steps", "mode")),
}
ALIASES = {"both": ("activation", "attribution"), "all": tuple(METHODS)}


def parse_methods(spec: str) -> list[str]:
    """``"activation,relp"`` → ``["activation", "relp"]`` (registry order); ``both`` and ``all`` are aliases."""
    names: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            raise ToxlensError(
                f"--method {spec!r}: empty entry; expected a comma-separated list of {_known()}"
            )
        expanded = ALIASES.get(part, (part,))
        for name in expanded:
            if name not in METHODS:
                raise ToxlensError(f"unknown method {name!r} in {spec!r}; expected one of {_known()}")
            if name not in names:
                names.append(name)
    return [m for m in METHODS if m in names]


def run_method(
    name: str, model: Any, pairs: Any, metric: Any, target: str, settings: dict[str, Any]
) -> PatchResult:
    """Run method ``name`` with the settings that apply to it (``ig_steps`` → ``steps`` for ``ig``, …)."""
    method = METHODS[name]
    prefix = f"{name}_"
    kwargs = {}
    for key, value in settings.items():
        short = key[len(prefix) :] if key.startswith(prefix) else key
        if short in method.settings:
            kwargs[short] = value
    return method.run(model, pairs, metric, target, **kwargs)


def _known() -> str:
    return ", ".join([*METHODS, *ALIASES])
