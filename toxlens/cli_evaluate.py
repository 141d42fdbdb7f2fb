"""``toxlens evaluate``: compare interventions on the same prompts and seeds (see interventions.evaluate)."""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

from lens.errors import ToxlensError
from toxlens.common import check_limit, check_model_early, check_seed, device_map_args, load_from_args
from toxlens.workers_args import worker_args


def _floats(text: str, flag: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise ToxlensError(f"{flag} expects comma-separated numbers, got {text!r}") from err
    bad = [v for v in values if not math.isfinite(v)]
    if bad or not values:
        raise ToxlensError(f"{flag} expects comma-separated finite numbers, got {text!r}")
    return values


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
        "and their random controls (dampen, surgery, project, subtract; METHOD-random), each also as "
        "METHOD+rollback",
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
    worker_args(p)
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true")


def run(args: argparse.Namespace) -> int:
    from interventions.scoring import get_scorer, parse_scorers
    from lens.io import atomic_directory, check_output_dir
    from lens.probe import Probe
    from lens.textfiles import read_prompts, read_text_source
    from toxlens.eval_recipe import check_plan, recipe
    from toxlens.workers_args import check_worker_args

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
    check_plan(args, names, scales)
    check_worker_args(args)
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
    if args.steer_vector == "probe" and probe is None:
        raise ToxlensError("--steer-vector probe needs --probe DIR")
    scorers = parse_scorers(args.scorer)
    for name in scorers:
        get_scorer(name)  # fail before loading the model
    if args.threshold is not None and not 0 < args.threshold <= 1:
        raise ToxlensError(f"--threshold must be in (0, 1], got {args.threshold}")
    check_model_early(args, {"--steer-layer": args.steer_layer, "--correct-layer": args.correct_layer})
    t0 = time.perf_counter()
    result = _run_conditions(args, prompts, scorers, recipe(args, ppl_texts, scales))
    sweep = None
    if scales:
        from interventions.sweep import sweep_table

        sweep = sweep_table(result, scales)
        result = result.select(names)
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
        result.summary[
            [
                *cols,
                "sample_perplexity",
                "rollbacks_per_sample",
                "stopped_share",
                "mean_new_tokens",
                "tokens_per_second",
            ]
        ].to_string(index=False)
    )
    if sweep is not None:
        print(
            sweep[["scale", "toxicity_probability", "expected_max_toxicity", "perplexity"]].to_string(
                index=False
            )
        )
    print(json.dumps({"wrote": str(args.out)}))
    return 0


def _run_conditions(
    args: argparse.Namespace, prompts: list[str], scorers: list[str], spec: dict[str, Any]
) -> Any:
    """Every condition (and sweep scale) in this process, or on Ray workers with --workers N."""
    import functools

    from interventions.evaluate import evaluate, make_protocol
    from interventions.sampling import Sampling
    from toxlens.eval_recipe import make_conditions
    from toxlens.workers_args import gpus_per_worker, use_ray, worker_threads

    common: dict[str, Any] = {
        "samples": args.samples,
        "max_new_tokens": args.max_new_tokens,
        "seed": args.seed,
        "scorer": scorers[0],
        "extra_scorers": scorers[1:],
        "perplexity_texts": spec["ppl_texts"],
        "sampling": Sampling(args.temperature, args.sample_top_k, args.top_p),
        "batch_size": args.batch_size,
        "prepend_bos": args.prepend_bos,
    }
    say = functools.partial(print, flush=True)
    if not use_ray(args):
        t0 = time.perf_counter()
        model = load_from_args(args)
        startup_s = time.perf_counter() - t0
        result = evaluate(model, prompts, make_conditions(model, spec), progress=say, **common)
        result.settings["startup_s"] = startup_s
        return result
    from interventions.evaluate_ray import evaluate_on_ray
    from lens.loading import load_model

    load = functools.partial(
        load_model,
        args.model,
        args.device,
        args.dtype,
        device_map=args.device_map,
        max_memory=args.max_memory,
    )
    return evaluate_on_ray(
        load,
        functools.partial(make_conditions, spec=spec),
        make_protocol(prompts, **common),
        workers=args.workers,
        address=args.ray_address,
        threads=worker_threads(args),
        gpus_per_worker=gpus_per_worker(args),
        say=say,
    )
