"""Evaluation conditions: what is switched on while a condition's samples and perplexity are computed.

A :class:`Condition` bundles a reversible model edit (built fresh, undone afterwards), generation-time
steering, and a probe monitor with rollback. :func:`build_conditions` makes the named conditions of
``toxlens evaluate``:

* ``none`` — the model as loaded;
* ``ablate`` — the top-k components of a saved ``locate`` directory ablated (``mean`` over a reference
  set of neutral texts by default, or ``zero``);
* ``steer`` — ``scale × vector`` added at ``blocks.{layer}.hook_resid_pre`` at every position (the
  vector: the probe's direction unless another is given; a negative scale steers away from toxic);
* ``edit`` — the steering vector's direction projected out of the output weights of the top-k located
  components (a weight edit, no run-time cost);
* ``rollback`` — the probe monitors every token; a score ``≥ threshold`` rolls back (no corrective steer);
* ``rollback+steer`` — the same, with the corrective steer against the probe direction for the next
  ``correct_tokens`` tokens;
* ``dampen``, ``dampen-random``, ``surgery``, ``surgery-random``, ``project``, ``project-random``, ``subtract``,
  ``subtract-random`` — the edit method of that name (a ``-random`` control takes its edit's
  ``edit_params`` unless given its own)
  (:data:`interventions.edit_methods.EDIT_METHODS`) built from a neuron ranking (``locate --texts``
  directory: ``dampen_from`` for the dampen pair, ``edit_from`` for the others, each falling back to the
  other), with ``edit_params[method]`` overriding the method's defaults;
* ``<method>+rollback`` — that edit and the probe monitor with rollback together.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from torch import Tensor

from interventions.edit_methods import EDIT_METHODS, get_method
from interventions.edits import Edit, ablate, project_out_weights
from interventions.policy import RollbackPolicy
from interventions.steering import Steer
from lens.errors import ToxlensError
from lens.model import LensModel
from lens.probe import Probe
from lens.textfiles import read_csv_rows
from patching.neuron_result import NeuronRanking

BASE_CONDITIONS = ("none", "ablate", "steer", "edit", "rollback", "rollback+steer")
# every edit method of the registry, alone and combined with the probe monitor's rollback
NEURON_CONDITIONS = tuple(n for m in EDIT_METHODS for n in (m, f"{m}+rollback"))
CONDITIONS = BASE_CONDITIONS + NEURON_CONDITIONS
ABLATE_KINDS = ("all", "heads", "mlps")


@dataclass
class Condition:
    name: str
    make_edit: Callable[[LensModel], Edit] | None = None
    steers: list[Steer] = field(default_factory=list)
    monitor: Probe | None = None
    threshold: float | None = None
    policy: RollbackPolicy | None = None
    settings: dict[str, Any] = field(default_factory=dict)


def top_components(locate_dir: str | Path, top_k: int, kind: str = "all") -> list[str]:
    """The ``top_k`` component names by rank from ``LOCATE_DIR/components.csv`` (``kind``: all, heads, mlps)."""
    if kind not in ABLATE_KINDS:
        raise ToxlensError(f"unknown component kind {kind!r}; expected one of {ABLATE_KINDS}")
    if top_k < 1:
        raise ToxlensError(f"top_k must be >= 1, got {top_k}")
    path = Path(locate_dir) / "components.csv"
    if not path.is_file():
        raise ToxlensError(f"{locate_dir!s} is not a locate output directory: {path} is missing")
    rows = read_csv_rows(path, "locate table")
    if not rows or "component" not in rows[0] or "rank" not in rows[0]:
        raise ToxlensError(f"{path}: expected columns 'component' and 'rank'")
    keep = {"all": ("head", "mlp"), "heads": ("head",), "mlps": ("mlp",)}[kind]
    rows = [r for r in rows if r.get("kind") in keep]
    rows.sort(key=lambda r: _rank(path, r))
    return [r["component"] for r in rows[:top_k]]


def build_conditions(
    model: LensModel,
    names: Sequence[str],
    *,
    probe: Probe | None = None,
    threshold: float | None = None,
    policy: RollbackPolicy | None = None,
    correct_scale: float = 8.0,
    locate_dir: str | Path | None = None,
    top_k: int = 10,
    ablate_kind: str = "all",
    ablate_mode: str = "mean",
    reference: Sequence[str] = (),
    steer_vector: Tensor | None = None,
    steer_layer: int | None = None,
    steer_scale: float | None = None,
    dampen_from: str | Path | NeuronRanking | None = None,
    edit_from: str | Path | NeuronRanking | None = None,
    edit_params: dict[str, dict[str, Any]] | None = None,
) -> list[Condition]:
    """Conditions for ``names`` (see module docstring); every missing input is named in the error."""
    unknown = [n for n in names if n not in CONDITIONS]
    if unknown or not names:
        raise ToxlensError(f"unknown conditions {unknown or names}; expected a list among {CONDITIONS}")
    if len(set(names)) != len(names):
        raise ToxlensError(f"conditions listed twice: {list(names)}")
    policy = policy or RollbackPolicy()
    rankings: dict[str, NeuronRanking] = {}
    vector = steer_vector if steer_vector is not None else (probe.direction if probe is not None else None)
    out: list[Condition] = []
    for name in names:
        if name == "none":
            out.append(Condition(name))
        elif name == "ablate":
            comps = top_components(_need(locate_dir, name, "--ablate-from LOCATE_DIR"), top_k, ablate_kind)
            ref = list(reference) if ablate_mode != "zero" else None
            if ablate_mode != "zero" and not ref:
                raise ToxlensError("condition 'ablate' (mode mean/resample) needs reference texts")

            def make_ablate(m: LensModel, comps: list[str] = comps, ref: list[str] | None = ref) -> Edit:
                return ablate(m, comps, mode=ablate_mode, reference=ref)

            settings = {"components": comps, "mode": ablate_mode, "n_reference": len(ref or [])}
            out.append(Condition(name, make_edit=make_ablate, settings=settings))
        elif name == "steer":
            v = _need(vector, name, "--probe DIR or a steering vector")
            layer = _need(steer_layer, name, "--steer-layer L")
            scale = _need(steer_scale, name, "--steer-scale A")
            s = Steer(v, layer, scale, positions="all")
            s.check(model)
            out.append(Condition(name, steers=[s], settings=s.describe()))
        elif name == "edit":
            v = _need(vector, name, "--probe DIR or a steering vector (the direction to project out)")
            comps = top_components(_need(locate_dir, name, "--ablate-from LOCATE_DIR"), top_k, ablate_kind)

            def make_edit(m: LensModel, comps: list[str] = comps, v: Tensor = v) -> Edit:
                return project_out_weights(m, comps, v)

            out.append(Condition(name, make_edit=make_edit, settings={"components": comps}))
        elif name in NEURON_CONDITIONS:
            base, _, rollback = name.partition("+")
            flag, where = (
                ("--dampen-from", dampen_from) if base.startswith("dampen") else ("--edit-from", edit_from)
            )
            where = _need(
                where if where is not None else (edit_from or dampen_from), name, f"{flag} LOCATE_DIR"
            )
            if isinstance(where, NeuronRanking):  # an in-memory ranking (Python API)
                ranking = where
            else:
                if str(where) not in rankings:
                    rankings[str(where)] = NeuronRanking.load(where)
                ranking = rankings[str(where)]
            method = get_method(base)
            # a control ("<method>-random") mirrors its edit's parameters unless given its own
            mirrored = (
                (edit_params or {}).get(base.removesuffix("-random"), {}) if base.endswith("-random") else {}
            )
            params = method.resolve({**mirrored, **(edit_params or {}).get(base, {})})

            def make_neuron_edit(
                m: LensModel,
                method: Any = method,
                ranking: NeuronRanking = ranking,
                params: dict[str, Any] = params,
            ) -> Edit:
                return method(m, ranking, params)

            source = "in-memory ranking" if isinstance(where, NeuronRanking) else str(where)
            settings = {"method": base, "params": params, "from": source, "foldable": method.foldable}
            cond = Condition(name, make_edit=make_neuron_edit, settings=settings)
            if rollback:
                cond = _with_rollback(cond, model, probe, threshold, policy, 0.0)
            out.append(cond)
        else:
            scale = correct_scale if name == "rollback+steer" else 0.0
            out.append(_with_rollback(Condition(name), model, probe, threshold, policy, scale))
    return out


def _with_rollback(
    cond: Condition,
    model: LensModel,
    probe: Probe | None,
    threshold: float | None,
    policy: RollbackPolicy,
    steer_scale: float,
) -> Condition:
    """``cond`` with the probe monitor and rollback switched on (``steer_scale``: corrective steer)."""
    p = _need(probe, cond.name, "--probe DIR")
    t = _need(threshold, cond.name, "--threshold T")
    pol = replace(policy, steer_scale=steer_scale)
    pol.check(model, p, t)
    settings = {
        **cond.settings,
        "threshold": t,
        **pol.to_dict(),
        "probe_layer": p.layer,
        "probe_hook": p.hook,
        "correct_layer": pol.layer_for(p, model.n_layers),
    }
    return replace(cond, monitor=p, threshold=t, policy=pol, settings=settings)


def _rank(path: Path, row: dict[str, str]) -> float:
    """A row's rank: a finite number, else an error naming the component (a ranking from NaN scores)."""
    try:
        rank = float(row["rank"])
    except (TypeError, ValueError):
        rank = math.nan
    if not math.isfinite(rank):
        raise ToxlensError(
            f"{path}: component {row.get('component')!r} has rank {row.get('rank')!r}; expected a number"
        )
    return rank


def _need(value: Any, condition: str, what: str) -> Any:
    if value is None:
        raise ToxlensError(f"condition {condition!r} needs {what}")
    return value
