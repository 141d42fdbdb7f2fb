"""``toxlens locate``: rank every attention head and MLP by its toxic effect (see README)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from lens.errors import ToxlensError
from toxlens.common import (
    check_device_map_args,
    check_pair_metric_inputs,
    device_map_args,
    load_from_args,
    model_args,
    pair_metric,
    pair_metric_args,
)


def add_parser(sub: Any) -> None:
    loc = sub.add_parser("locate", help="rank every attention head and MLP by its toxic effect")
    model_args(loc)
    device_map_args(loc)
    loc.add_argument(
        "--pairs", default=None, help='JSONL contrast pairs: {"toxic": ..., "benign": ...} (or --texts)'
    )
    pair_metric_args(loc)
    loc.add_argument(
        "--method",
        default="both",
        help="comma-separated methods among activation, attribution, relp, ig (aliases: both = "
        "activation,attribution; all). Ranks come from activation when it runs, else the first method",
    )
    loc.add_argument("--ig-steps", type=int, default=5, help="integrated gradients: interpolation steps m")
    loc.add_argument(
        "--ig-mode",
        default="inputs",
        choices=["inputs", "activations"],
        help="integrated gradients: interpolate the embeddings (default) or each hook site's activation",
    )
    loc.add_argument(
        "--relp-ah-rule", action="store_true", help="RelP: also detach the attention patterns (AH-rule)"
    )
    loc.add_argument("--top-k", type=int, default=10)
    loc.add_argument("--batch-size", type=int, default=64, help="rows per patched forward (speed only)")
    loc.add_argument("--out", required=True, help="output directory (written atomically)")
    loc.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    loc.add_argument("--no-progress", action="store_true")
    from toxlens.cli_locate_texts import add_text_args

    add_text_args(loc)


def run(args: argparse.Namespace) -> int:
    if (args.pairs is None) == (args.texts is None):
        raise ToxlensError(
            "locate needs exactly one of --pairs FILE (contrast pairs) or --texts FILE (labelled texts)"
        )
    if args.texts is not None:
        from toxlens.cli_locate_texts import run_texts

        return run_texts(args)
    from lens.io import atomic_directory, check_output_dir, json_safe
    from lens.loading import check_model_spec, resolve_device
    from lens.prompts import load_pairs
    from patching.locate import locate, summary, write_locate
    from patching.methods import parse_methods

    methods = parse_methods(args.method)
    if args.ig_steps < 1:
        raise ToxlensError(f"--ig-steps must be >= 1, got {args.ig_steps}")
    if args.top_k < 1:
        raise ToxlensError(f"--top-k must be >= 1, got {args.top_k}")
    if args.batch_size < 1:
        raise ToxlensError(f"--batch-size must be >= 1, got {args.batch_size}")
    check_pair_metric_inputs(args)
    inputs = [args.pairs, args.toxic_words, args.model]
    check_output_dir(Path(args.out), args.overwrite, inputs)
    check_model_spec(args.model)
    resolve_device(args.device)
    check_device_map_args(args)
    timings: dict[str, float] = {}
    t_all = t0 = time.perf_counter()
    model = load_from_args(args)
    timings["load_model_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    pairs = load_pairs(args.pairs, model, prepend_bos=args.prepend_bos)
    metric = pair_metric(args, model, pairs)
    timings["prepare_inputs_s"] = time.perf_counter() - t0
    settings = {"ig_steps": args.ig_steps, "ig_mode": args.ig_mode, "relp_ah_rule": args.relp_ah_rule}
    result = locate(model, pairs, metric, ",".join(methods), args.batch_size, not args.no_progress, settings)
    timings.update(result.timings)
    with atomic_directory(args.out, args.overwrite, inputs) as stage:
        t0 = time.perf_counter()
        write_locate(result, stage, {})
        from figures.render import render

        render(stage, stage / "figures")
        timings["write_outputs_s"] = time.perf_counter() - t0
        timings["total_s"] = time.perf_counter() - t_all
        info = summary(result, model, pairs, metric, args.top_k, timings)
        (stage / "result.json").write_text(
            json.dumps(json_safe(info), indent=2, default=str, allow_nan=False)
        )
    top = result.top_k(args.top_k)
    print(f"top {args.top_k} components ({result.primary_method} score):")
    print(top.to_string(index=False))
    for method, stats in info["agreement_with_activation"].items():
        parts = [
            f"{label} {stats[label]['pearson']:.3f}"
            for label in ("heads", "mlps", "all")
            if stats[label]["pearson"] is not None
        ]
        cost = stats["cost"]["forward_equivalents"]
        tail = f"; cost {cost:.1f} forward passes" if cost is not None else ""
        print(f"{method} vs activation Pearson r: {', '.join(parts)}{tail}")
    print(f"wrote {args.out}/components.csv, result.json, figures/")
    return 0
