"""The registry of edit methods that act on a neuron ranking: one interface read by the CLI
(``toxlens edit``), :mod:`interventions.conditions` (``toxlens evaluate``) and the figures.

An :class:`EditMethod` turns ``(model, ranking, params)`` into an :class:`~interventions.edits.Edit`.
``params`` are validated against the method's ``defaults`` (unknown names raise); the resolved values
are what a result records. ``foldable`` methods change only weights, so ``toxlens edit`` can export them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from interventions.edit_base import Edit
from interventions.neuron_edits import (
    aura_alphas,
    check_ranking,
    dampen,
    random_alphas,
    subtract,
    surgery,
)
from interventions.neuron_project import project
from lens.errors import ToxlensError
from lens.model import LensModel
from patching.neuron_result import NeuronRanking


@dataclass(frozen=True)
class EditMethod:
    name: str
    summary: str
    foldable: bool
    defaults: Mapping[str, Any]
    build: Callable[[LensModel, NeuronRanking, dict[str, Any]], Edit]

    def resolve(self, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``defaults`` updated by ``params``; an unknown name or a wrong type raises."""
        out = dict(self.defaults)
        for key, value in (params or {}).items():
            if key not in self.defaults:
                raise ToxlensError(
                    f"edit method {self.name!r} has no parameter {key!r}; expected one of {sorted(self.defaults)}"
                )
            default = self.defaults[key]
            if (
                default is not None
                and not isinstance(value, type(default))
                and not (
                    isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool)
                )
            ):
                raise ToxlensError(
                    f"edit parameter {self.name}.{key}: expected {type(default).__name__}, got {value!r}"
                )
            out[key] = float(value) if isinstance(default, float) else value
        return out

    def __call__(
        self, model: LensModel, ranking: NeuronRanking, params: Mapping[str, Any] | None = None
    ) -> Edit:
        check_ranking(model, ranking)
        return self.build(model, ranking, self.resolve(params))


def _dampen(model: LensModel, r: NeuronRanking, p: dict[str, Any]) -> Edit:
    return dampen(model, aura_alphas(r, p["min_auroc"], p["layers"]), label="dampen")


def _dampen_random(model: LensModel, r: NeuronRanking, p: dict[str, Any]) -> Edit:
    alpha = random_alphas(aura_alphas(r, p["min_auroc"], p["layers"]), p["seed"])
    return dampen(model, alpha, label=f"dampen-random[seed={p['seed']}]")


EDIT_METHODS: dict[str, EditMethod] = {
    m.name: m
    for m in (
        EditMethod(
            "dampen",
            "AurA: neurons with AUROC > min_auroc scaled by 1 − 2·(AUROC − 0.5), folded into value vectors",
            True,
            {"min_auroc": 0.5, "layers": None},
            _dampen,
        ),
        EditMethod(
            "dampen-random",
            "control for dampen: the same α values per layer on randomly permuted neurons",
            True,
            {"min_auroc": 0.5, "layers": None, "seed": 0},
            _dampen_random,
        ),
        EditMethod(
            "surgery",
            "Model Surgery: the k input rows per layer most aligned with the probe shifted against it",
            True,
            {"k": 32, "alpha": 1.0, "layers": None},
            lambda m, r, p: surgery(m, r, p["k"], p["alpha"], p["layers"]),
        ),
        EditMethod(
            "surgery-random",
            "control for surgery: k random input rows per layer, shifted by the same rule",
            True,
            {"k": 32, "alpha": 1.0, "layers": None, "seed": 0},
            lambda m, r, p: surgery(m, r, p["k"], p["alpha"], p["layers"], random_seed=p["seed"]),
        ),
        EditMethod(
            "project",
            "ProFS-style: each layer's toxic MLP-output subspace projected out of the value vectors of its "
            "top_frac top-AUROC neurons (1.0: all)",
            True,
            {"rank": 2, "layers": None, "top_frac": 0.25},
            lambda m, r, p: project(m, r, p["rank"], p["layers"], p["top_frac"]),
        ),
        EditMethod(
            "project-random",
            "control for project: as many random neurons per layer (neurons: random | random-unlocated | "
            "located), the toxic or a random subspace (subspace: toxic | random) projected out",
            True,
            {
                "rank": 2,
                "layers": None,
                "top_frac": 0.25,
                "seed": 0,
                "neurons": "random",
                "subspace": "toxic",
            },
            lambda m, r, p: project(
                m, r, p["rank"], p["layers"], p["top_frac"], p["neurons"], p["subspace"], p["seed"]
            ),
        ),
        EditMethod(
            "subtract",
            "value vectors most aligned with the probe subtracted from the MLP output during generation",
            False,
            {"n_neurons": 1, "scale": 10.0},
            lambda m, r, p: subtract(m, r, p["n_neurons"], p["scale"]),
        ),
        EditMethod(
            "subtract-random",
            "control for subtract: as many random neurons of the same layers, subtracted at the same scale",
            False,
            {"n_neurons": 1, "scale": 10.0, "seed": 0},
            lambda m, r, p: subtract(m, r, p["n_neurons"], p["scale"], random_seed=p["seed"]),
        ),
    )
}


def get_method(name: str) -> EditMethod:
    if name not in EDIT_METHODS:
        raise ToxlensError(f"unknown edit method {name!r}; expected one of {sorted(EDIT_METHODS)}")
    return EDIT_METHODS[name]
