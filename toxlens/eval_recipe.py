"""What ``toxlens evaluate`` runs, as plain data: the checks of its flags and the conditions they build.

:func:`make_conditions` builds every condition (the ``--conditions`` list, then the ``--sweep-scales``
steering conditions) from a picklable dict of the command's arguments, so the same function builds
them in this process and on each Ray worker (``--workers N``), where they must be identical.
"""

from __future__ import annotations

import argparse
from typing import Any

from lens.errors import ToxlensError
from toxlens.common import check_finite, check_steer_vector_spec, parse_edit_params
from toxlens.generate_args import default_safe_threshold


def check_plan(args: argparse.Namespace, names: list[str], scales: list[float]) -> None:
    """Everything the conditions and the sweep need, checked before any file or model is read."""
    from interventions.conditions import CONDITIONS, top_components

    unknown = [n for n in names if n not in CONDITIONS]
    if unknown or not names:
        raise ToxlensError(
            f"--conditions: unknown conditions {unknown or names}; expected a list among {list(CONDITIONS)}"
        )
    if len(set(names)) != len(names):
        raise ToxlensError(f"--conditions lists a condition twice: {names}")
    for flag in ("threshold", "safe_threshold", "correct_scale", "steer_scale", "temperature", "top_p"):
        check_finite(getattr(args, flag), "--" + flag.replace("_", "-"))
    if args.steer_vector is not None:
        check_steer_vector_spec(args.steer_vector, args.probe)
    has_vector = args.probe is not None or args.steer_vector is not None
    needs = {
        "ablate": [("--ablate-from LOCATE_DIR", args.ablate_from)],
        "edit": [
            ("--ablate-from LOCATE_DIR", args.ablate_from),
            ("--probe DIR or --steer-vector", has_vector),
        ],
        "steer": [
            ("--probe DIR or --steer-vector", has_vector),
            ("--steer-layer L", args.steer_layer),
            ("--steer-scale A", args.steer_scale),
        ],
        "rollback": [("--probe DIR", args.probe), ("--threshold T", args.threshold)],
        "rollback+steer": [("--probe DIR", args.probe), ("--threshold T", args.threshold)],
    }
    for name in names:
        for what, value in needs.get(name, []):
            if value is None or value is False:
                raise ToxlensError(f"condition {name!r} needs {what}")
    if {"ablate", "edit"} & set(names):
        top_components(args.ablate_from, args.top_k, args.ablate_kind)
    _check_neuron_conditions(args, names)
    if scales and (args.steer_layer is None or not has_vector):
        raise ToxlensError("--sweep-scales needs --steer-layer and a vector (--probe or --steer-vector)")


def _check_neuron_conditions(args: argparse.Namespace, names: list[str]) -> None:
    """Edit-method conditions: a ranking directory of the right kind, known parameters, a monitor."""
    from interventions.conditions import NEURON_CONDITIONS
    from patching.neuron_result import NeuronRanking

    args.edit_params = parse_edit_params(args.edit_param)
    for name in names:
        if name not in NEURON_CONDITIONS:
            continue
        base, _, rollback = name.partition("+")
        where = (args.dampen_from if base.startswith("dampen") else args.edit_from) or (
            args.edit_from or args.dampen_from
        )
        if where is None:
            flag = "--dampen-from" if base.startswith("dampen") else "--edit-from"
            raise ToxlensError(
                f"condition {name!r} needs {flag} LOCATE_DIR (a `toxlens locate --texts` output)"
            )
        NeuronRanking.load(where)
        if rollback and (args.probe is None or args.threshold is None):
            raise ToxlensError(
                f"condition {name!r} needs --probe DIR and --threshold T (the rollback monitor)"
            )


def recipe(args: argparse.Namespace, ppl_texts: list[str], scales: list[float]) -> dict[str, Any]:
    """The arguments :func:`make_conditions` needs, as a picklable dict."""
    return {
        "args": {k: v for k, v in vars(args).items() if k != "func"},
        "ppl_texts": ppl_texts,
        "scales": scales,
    }


def make_conditions(model: Any, spec: dict[str, Any]) -> list[Any]:
    """The ``--conditions`` conditions, then one ``steer@{scale}`` condition per ``--sweep-scales`` value."""
    from interventions.conditions import build_conditions
    from interventions.policy import RollbackPolicy
    from interventions.steering import vector_from_spec
    from interventions.sweep import sweep_conditions
    from lens.probe import Probe

    args = argparse.Namespace(**spec["args"])
    names = [c.strip() for c in args.conditions.split(",") if c.strip()]
    probe = Probe.load(args.probe) if args.probe else None
    if args.steer_vector == "probe" and probe is None:
        raise ToxlensError("--steer-vector probe needs --probe DIR")
    # None: the conditions fall back to the probe's direction
    vector = None if args.steer_vector in (None, "probe") else vector_from_spec(args.steer_vector, model)
    if args.safe_threshold is not None:
        safe = args.safe_threshold
    elif args.threshold is not None:
        safe = default_safe_threshold(args.threshold)
    else:  # no monitored condition: the policy's own default, never used
        safe = RollbackPolicy.safe_threshold
    policy = RollbackPolicy(
        safe_threshold=safe,
        budget=args.budget,
        on_budget=args.on_budget,
        steer_tokens=args.correct_tokens,
        steer_layer=args.correct_layer,
        forbid_token=not args.no_forbid,
    )
    conditions = build_conditions(
        model,
        names,
        probe=probe,
        threshold=args.threshold,
        policy=policy,
        correct_scale=args.correct_scale,
        locate_dir=args.ablate_from,
        top_k=args.top_k,
        ablate_kind=args.ablate_kind,
        ablate_mode=args.ablate_mode,
        reference=spec["ppl_texts"][:32],
        steer_vector=vector,
        steer_layer=args.steer_layer,
        steer_scale=args.steer_scale,
        dampen_from=args.dampen_from,
        edit_from=args.edit_from,
        edit_params=args.edit_params,
    )
    if spec["scales"]:
        v = vector if vector is not None else (probe.direction if probe is not None else None)
        if v is None or args.steer_layer is None:
            raise ToxlensError("--sweep-scales needs --steer-layer and a vector (--probe or --steer-vector)")
        conditions += sweep_conditions(model, v, args.steer_layer, spec["scales"])
    return conditions
