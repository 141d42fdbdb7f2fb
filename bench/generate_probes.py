"""Probes and timers for bench/bench_generate.py: a probe that never fires, a probe whose score follows a
schedule (to force rollbacks of known length), and wall/CPU timers."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from torch import Tensor

from interventions.policy import Generation
from lens.model import LensModel
from lens.probe import Probe

THRESHOLD = 0.99
SAFE_THRESHOLD = 0.5
MID_SCORE = 0.6  # >= SAFE_THRESHOLD (blocks safe points) and < THRESHOLD (does not fire)
ROLLBACK_NS = (1, 4, 8)
CORRECTIVE_SCALE = 4.0


def silent_probe(model: LensModel, seed: int) -> Probe:
    """A random unit direction at the middle layer with bias −1e4: sigmoid(logit) is ~0, it never fires."""
    d = model.info.d_model
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(d, generator=gen)
    w = w / w.norm()
    return Probe(
        model.n_layers // 2,
        "resid_post",
        "mean",
        w,
        -1e4,
        torch.zeros(d),
        torch.ones(d),
        {"note": "random direction, bias -1e4: never fires"},
    )


class ScriptedProbe(Probe):
    """A probe whose score follows a schedule: ``schedule[k]`` for the k-th generated token's forward.

    ``generate`` calls ``score`` once per forward pass on the ``[batch, q, d_model]`` residual: call 0 is
    the prompt, call ``k ≥ 1`` feeds generated token ``k − 1`` (one sequence, no rollback yet). After the
    first score ≥ ``fire_at`` has been returned, every later call scores 0.
    """

    def __init__(self, base: Probe, schedule: dict[int, float], fire_at: float) -> None:
        super().__init__(base.layer, base.hook, base.pooling, base.weight, base.bias, base.mean, base.std)
        self.schedule, self.fire_at = schedule, fire_at
        self.calls, self.fired = 0, False

    def score(self, resid: Tensor) -> Tensor:
        out = torch.zeros(resid.shape[:-1])
        if self.calls > 0 and not self.fired:
            value = self.schedule.get(self.calls - 1, 0.0)
            out[...] = value
            self.fired = value >= self.fire_at
        self.calls += 1
        return out


def token_count(gens: list[Generation]) -> int:
    return sum(len(g.tokens) for g in gens)


def timed(fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def cpu_timed(fn: Any) -> tuple[float, float, Any]:
    """Wall seconds, CPU seconds of this process (not counting time other work took the cores), result."""
    c0 = time.process_time()
    t, out = timed(fn)
    return t, time.process_time() - c0, out
