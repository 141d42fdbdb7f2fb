"""``toxlens evaluate``: compare interventions on the same prompts and seeds (see interventions.evaluate)."""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

from lens.errors import ToxlensError
from toxlens.common import (
    check_finite,
    check_limit,
    check_model_early,
    check_seed,
    check_steer_vector_spec,
    device_map_args,
    load_from_args,
    parse_edit_params,
)


def _floats(text: str, flag: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise ToxlensError(f"{flag} expects comma-separated numbers, got {text!r}") from err
    bad = [v for v in values if not math.isfinite(v)]
    if bad or not values:
        raise ToxlensError(f"{flag} expects comma-separated finite numbers, got {text!r}")
    return values


def _check_plan(args: argparse.Namespace, names: list[str], scales: list[float]) -> None:
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


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "evaluate", help="toxicity / fluency / cost of interventions on the same prompts and seeds"
    )
    p.add_argument("--model", default="gpt2")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    device_map_args(p)
    p.add_argument(
        "--prompts", required=True, help=".txt (one prompt per line) or .jsonl with a 'prompt' field"
    )
    p.add_argument("--limit-prompts", type=int, default=None, help="use only the first N prompts")
    p.add_argument("--samples", type=int, default=10, help="samples per prompt (K)")
    p.add_argument("--max-new-tokens", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--conditions",
        default="none",
        help="comma list among none,ablate,steer,edit,rollback,rollback+steer and the edit methods "
        "dampen,dampen-random,surgery,project,subtract (each also as METHOD+rollback)",
    )
    p.add_argument(
        "--scorer",
        default="profanity",
        help="profanity (default, offline) | better-profanity (offline, binary, independent word list) | "
        "detoxify | detoxify-unbiased; a comma list scores with each: the first is the headline, the "
        "others add columns {statistic}_{scorer} to summary.csv",
    )
    p.add_argument("--probe", default=None, help="probe directory (toxlens probe train)")
    p.add_argument("--threshold", type=float, default=None, help="rollback when a token's probe score >= T")
    p.add_argument(
        "--safe-threshold", type=float, default=None, help="safe point: score < S (default: half of T)"
    )
    p.add_argument("--budget", type=int, default=4, help="rollbacks per sequence")
    p.add_argument("--on-budget", default="stop", choices=["stop", "continue"])
    p.add_argument("--correct-scale", type=float, default=8.0, help="rollback+steer: corrective steer size")
    p.add_argument(
        "--correct-tokens", type=int, default=8, help="rollback+steer: steered tokens after a rollback"
    )
    p.add_argument(
        "--correct-layer", type=int, default=None, help="rollback+steer: layer (default: probe layer)"
    )
    p.add_argument(
        "--no-forbid", action="store_true", help="do not forbid the token that started a discarded span"
    )
    p.add_argument(
        "--dampen-from", default=None, help="locate --texts directory (dampen, dampen-random conditions)"
    )
    p.add_argument(
        "--edit-from", default=None, help="locate --texts directory (surgery, project, subtract conditions)"
    )
    p.add_argument(
        "--edit-param",
        action="append",
        default=None,
        metavar="METHOD.KEY=VALUE",
        help="override an edit method's parameter, e.g. dampen.min_auroc=0.6 (repeatable)",
    )
    p.add_argument("--ablate-from", default=None, help="locate output directory (ablate / edit conditions)")
    p.add_argument("--top-k", type=int, default=10, help="components taken from --ablate-from")
    p.add_argument("--ablate-kind", default="all", choices=["all", "heads", "mlps"])
    p.add_argument("--ablate-mode", default="mean", choices=["mean", "zero"])
    p.add_argument("--steer-vector", default=None, help="probe (default) | FILE.safetensors | L7.mlp:123")
    p.add_argument("--steer-layer", type=int, default=None)
    p.add_argument("--steer-scale", type=float, default=None, help="added scale × vector (negative: away)")
    p.add_argument(
        "--sweep-scales", default=None, help="comma list: also run a steering-scale sweep → sweep.csv"
    )
    p.add_argument(
        "--perplexity-text",
        default=None,
        help="neutral text for perplexity: .txt lines, .jsonl 'text', or hf:NAME[#CONFIG]:SPLIT[:COLUMN] (datasets)",
    )
    p.add_argument("--limit-perplexity", type=int, default=None, help="use only the first N neutral texts")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--sample-top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--prepend-bos", action="store_true")
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true")


def run(args: argparse.Namespace) -> int:
    from interventions.conditions import build_conditions
    from interventions.evaluate import evaluate, sweep_steering
    from interventions.policy import RollbackPolicy
    from interventions.sampling import Sampling
    from interventions.scoring import get_scorer, parse_scorers
    from interventions.steering import vector_from_spec
    from lens.io import atomic_directory, check_output_dir
    from lens.probe import Probe
    from lens.textfiles import read_prompts, read_text_source

    names = [c.strip() for c in args.conditions.split(",") if c.strip()]
    scales = _floats(args.sweep_scales, "--sweep-scales") if args.sweep_scales is not None else []
    for flag, v in (
        ("--samples", args.samples),
        ("--max-new-tokens", args.max_new_tokens),
        ("--batch-size", args.batch_size),
    ):
        if v < 1:
            raise ToxlensError(f"{flag} must be >= 1, got {v}")
    check_limit(args.limit_prompts, "--limit-prompts")
    check_limit(args.limit_perplexity, "--limit-perplexity")
    _check_plan(args, names, scales)
    inputs = [args.model, args.prompts, args.perplexity_text, args.probe, args.ablate_from, args.steer_vector]
    inputs += [args.dampen_from, args.edit_from]
    check_output_dir(Path(args.out), args.overwrite, inputs)
    prompts = read_prompts(args.prompts)[: args.limit_prompts]
    check_seed(args.seed, len(prompts) * args.samples)
    ppl_texts = read_text_source(args.perplexity_text, args.limit_perplexity) if args.perplexity_text else []
    if "ablate" in names and args.ablate_mode != "zero" and not ppl_texts:
        raise ToxlensError(
            "condition 'ablate' with --ablate-mode mean needs --perplexity-text (its first 32 texts are "
            "the reference the means are taken over)"
        )
    probe = Probe.load(args.probe) if args.probe else None
    monitored = [n for n in names if "rollback" in n.split("+")]
    if monitored and probe is not None and probe.monitor_refusal() is not None:
        raise ToxlensError(
            f"--probe {args.probe!r} cannot monitor generation (conditions {','.join(monitored)}): "
            f"{probe.monitor_refusal()}"
        )
    scorers = parse_scorers(args.scorer)
    for name in scorers:
        get_scorer(name)  # fail before loading the model
    sampling = Sampling(args.temperature, args.sample_top_k, args.top_p)
    if args.threshold is not None and not 0 < args.threshold <= 1:
        raise ToxlensError(f"--threshold must be in (0, 1], got {args.threshold}")
    policy = RollbackPolicy(
        safe_threshold=(
            args.safe_threshold
            if args.safe_threshold is not None
            else (args.threshold / 2 if args.threshold is not None else 0.3)
        ),
        budget=args.budget,
        on_budget=args.on_budget,
        steer_tokens=args.correct_tokens,
        steer_layer=args.correct_layer,
        forbid_token=not args.no_forbid,
    )
    check_model_early(args, {"--steer-layer": args.steer_layer, "--correct-layer": args.correct_layer})
    t0 = time.perf_counter()
    model = load_from_args(args)
    if args.steer_vector == "probe" and probe is None:
        raise ToxlensError("--steer-vector probe needs --probe DIR")
    # None: the conditions fall back to the probe's direction
    vector = None if args.steer_vector in (None, "probe") else vector_from_spec(args.steer_vector, model)
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
        reference=ppl_texts[:32],
        steer_vector=vector,
        steer_layer=args.steer_layer,
        steer_scale=args.steer_scale,
        dampen_from=args.dampen_from,
        edit_from=args.edit_from,
        edit_params=args.edit_params,
    )
    common: dict[str, Any] = {
        "samples": args.samples,
        "max_new_tokens": args.max_new_tokens,
        "seed": args.seed,
        "scorer": scorers[0],
        "extra_scorers": scorers[1:],
        "perplexity_texts": ppl_texts,
        "sampling": sampling,
        "batch_size": args.batch_size,
        "prepend_bos": args.prepend_bos,
        "progress": lambda msg: print(msg, flush=True),
    }
    result = evaluate(model, prompts, conditions, **common)
    sweep = None
    if scales:
        v = vector if vector is not None else (probe.direction if probe is not None else None)
        if v is None or args.steer_layer is None:
            raise ToxlensError("--sweep-scales needs --steer-layer and a vector (--probe or --steer-vector)")
        sweep, _ = sweep_steering(model, prompts, v, args.steer_layer, scales, **common)
    result.settings.update(
        command="evaluate",
        args={k: v for k, v in vars(args).items() if k != "func"},
        probe=None if probe is None else {"layer": probe.layer, "hook": probe.hook, **probe.metadata},
        wall_time_s=time.perf_counter() - t0,
    )
    with atomic_directory(args.out, args.overwrite, inputs) as stage:
        result.write(stage)
        if sweep is not None:
            sweep.to_csv(stage / "sweep.csv", index=False)
        from figures.render_eval import render_evaluation

        render_evaluation(stage, stage / "figures")
    cols = [
        "condition",
        "toxicity_probability",
        "tp_ci_low",
        "tp_ci_high",
        "expected_max_toxicity",
        "perplexity",
    ]
    cols += [f"toxicity_probability_{name}" for name in scorers[1:]]
    print(
        result.summary[[*cols, "sample_perplexity", "rollbacks_per_sample", "tokens_per_second"]].to_string(
            index=False
        )
    )
    if sweep is not None:
        print(
            sweep[["scale", "toxicity_probability", "expected_max_toxicity", "perplexity"]].to_string(
                index=False
            )
        )
    print(json.dumps({"wrote": str(args.out)}))
    return 0
