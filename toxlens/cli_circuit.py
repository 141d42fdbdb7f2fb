"""``toxlens circuit``: sufficiency and necessity of a locate run's top-k components (see README)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from lens.errors import ToxlensError
from toxlens.common import check_pair_metric_inputs, check_seed, model_args, pair_metric, pair_metric_args

DEFAULT_KS = "1,2,5,10,20,50"


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "circuit", help="faithfulness of a locate ranking: sufficiency / necessity of its top-k components"
    )
    model_args(p)
    p.add_argument("--pairs", required=True, help='JSONL contrast pairs: {"toxic": ..., "benign": ...}')
    p.add_argument("--from", dest="from_dir", required=True, help="a `toxlens locate` output directory")
    p.add_argument(
        "--method",
        default=None,
        choices=["activation", "attribution", "relp", "ig"],
        help="rank by column score_<method> of components.csv (default: the locate run's own rank)",
    )
    p.add_argument(
        "--kind", default="all", choices=["all", "head", "mlp"], help="rank and draw only this kind"
    )
    p.add_argument("--ks", default=DEFAULT_KS, help=f"comma-separated set sizes (default: {DEFAULT_KS})")
    p.add_argument("--n-random", type=int, default=20, help="random k-sets per k (default: 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random k-sets (default: 0)")
    p.add_argument("--threshold", type=float, default=0.8, help="k80 threshold on sufficiency")
    pair_metric_args(p)
    p.add_argument("--batch-size", type=int, default=64, help="rows per patched forward (speed only)")
    p.add_argument("--out", required=True, help="output directory (written atomically)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.add_argument("--no-progress", action="store_true")


def parse_ks(text: str) -> list[int]:
    ks = []
    for item in text.split(","):
        try:
            k = int(item.strip())
        except ValueError:
            k = 0
        if k < 1 or str(k) != item.strip().lstrip("+"):
            raise ToxlensError(f"--ks must be comma-separated positive integers (e.g. 1,2,5), got {text!r}")
        ks.append(k)
    return ks


def run(args: argparse.Namespace) -> int:
    import math

    from lens.io import atomic_directory, check_output_dir
    from lens.loading import check_model_spec, load_model, resolve_device
    from lens.prompts import load_pairs
    from patching.circuit import check_ks
    from patching.ranking import check_same_model, read_ranking

    ks = parse_ks(args.ks)
    if args.n_random < 1:
        raise ToxlensError(f"--n-random must be >= 1, got {args.n_random}")
    check_seed(args.seed)
    if args.batch_size < 1:
        raise ToxlensError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not math.isfinite(args.threshold) or not 0 < args.threshold <= 1:
        raise ToxlensError(f"--threshold must be in (0, 1], got {args.threshold}")
    kind = None if args.kind == "all" else args.kind
    ranking = read_ranking(args.from_dir, args.method)
    check_model_spec(args.model)
    check_same_model(ranking, spec=args.model)
    n = ranking.pool_size(kind)
    if n == 0:
        raise ToxlensError(f"--from {args.from_dir!r} ranks no component of kind {kind!r}")
    check_ks(ks, n, n)
    check_pair_metric_inputs(args)
    inputs = [args.pairs, args.toxic_words, args.model, args.from_dir]
    check_output_dir(Path(args.out), args.overwrite, inputs)
    resolve_device(args.device)
    timings: dict[str, float] = {}
    t_all = t0 = time.perf_counter()
    model = load_model(args.model, args.device, args.dtype)
    check_same_model(ranking, model)
    timings["load_model_s"] = time.perf_counter() - t0
    pairs = load_pairs(args.pairs, model, prepend_bos=args.prepend_bos)
    metric = pair_metric(args, model, pairs)
    result = _faithfulness(args, model, pairs, metric, ranking, ks, kind)
    timings["faithfulness_s"] = result.metadata["timings"]["total_s"]
    result.metadata["ranking_source"] = ranking.to_dict()
    result.metadata["cli"] = {
        "metric": args.metric,
        "multi_token": args.multi_token,
        "toxic_words": args.toxic_words,
    }
    from figures.circuit import faithfulness_figure
    from figures.plots import write_figures

    fig = faithfulness_figure(result)
    with atomic_directory(args.out, args.overwrite, inputs) as stage:
        timings["total_s"] = time.perf_counter() - t_all
        result.metadata["wall_time_s"] = timings
        result.save(stage)
        write_figures({"faithfulness": fig}, stage)
    print(result.to_dataframe().to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print(f"k80 = {result.k80}, random k80 = {result.random_k80} (threshold {args.threshold:g})")
    print(f"wrote {args.out}/faithfulness.csv, result.json, faithfulness.html")
    return 0


def _faithfulness(
    args: argparse.Namespace,
    model: Any,
    pairs: Any,
    metric: Any,
    ranking: Any,
    ks: list[int],
    kind: str | None,
) -> Any:
    from patching.circuit import faithfulness

    return faithfulness(
        model,
        pairs,
        metric,
        ranking.names,
        ks,
        n_random=args.n_random,
        seed=args.seed,
        kind=kind,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        threshold=args.threshold,
    )
