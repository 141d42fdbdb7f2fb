"""What :func:`interventions.generate.generate` is told (:class:`RollbackPolicy`) and returns
(:class:`Generation`, with its :class:`RollbackEvent` trace). Plain data, JSON-ready via ``to_dict``."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from lens.errors import ToxlensError
from lens.model import LensModel
from lens.probe import Probe

ON_BUDGET = ("stop", "continue")


@dataclass(frozen=True)
class RollbackPolicy:
    """What a rollback does (every field is recorded in the results' metadata)."""

    safe_threshold: float = 0.3
    budget: int = 4
    on_budget: str = "stop"
    steer_scale: float = 0.0
    steer_tokens: int = 8
    steer_layer: int | None = None
    forbid_token: bool = True

    def check(self, model: LensModel, probe: Probe, threshold: float) -> None:
        if not 0 <= self.safe_threshold <= threshold:
            raise ToxlensError(
                f"safe_threshold must be in [0, threshold={threshold}], got {self.safe_threshold}"
            )
        if self.budget < 0:
            raise ToxlensError(f"rollback budget must be >= 0, got {self.budget}")
        if self.on_budget not in ON_BUDGET:
            raise ToxlensError(f"unknown on_budget {self.on_budget!r}; expected one of {ON_BUDGET}")
        if not (math.isfinite(self.steer_scale) and self.steer_scale >= 0):
            raise ToxlensError(f"steer_scale must be finite and >= 0, got {self.steer_scale}")
        if self.steer_tokens < 1:
            raise ToxlensError(f"steer_tokens must be >= 1, got {self.steer_tokens}")
        layer = self.layer_for(probe, model.n_layers)
        if not 0 <= layer < model.n_layers:
            raise ToxlensError(f"corrective steer layer must be in [0, {model.n_layers}), got {layer}")

    def layer_for(self, probe: Probe, n_layers: int) -> int:
        """The corrective steer's layer: ``steer_layer``, or by default the block after the probe's
        (``probe.layer + 1``, the probe's own layer when it is the last), so the probe reads the
        residual before the steer is added — a steer at or before the probe's read would also lower the
        probe's own score and could hide the next toxic token from the monitor."""
        if self.steer_layer is not None:
            return self.steer_layer
        return probe.layer + 1 if probe.layer + 1 < n_layers else probe.layer

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RollbackEvent:
    at: int  # index of the generated token whose score reached the threshold
    to: int  # generated tokens kept (the text keeps tokens[:to])
    discarded: int  # tokens removed: at + 1 - to
    forbidden: int | None = None  # token id forbidden at the safe point, if any


@dataclass
class Generation:
    prompt: str
    prompt_tokens: list[int]
    tokens: list[int]
    text: str
    scores: list[float]
    prompt_scores: list[float]
    rollbacks: list[RollbackEvent]
    forward_tokens: int
    recomputed: int
    finish_reason: str
    seed: int
    timeline: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rollbacks"] = [asdict(r) for r in self.rollbacks]
        return d
