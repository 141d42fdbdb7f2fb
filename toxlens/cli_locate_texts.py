"""``toxlens locate --texts FILE``: rank neurons, heads and MLPs from human-labelled text.

Writes ``OUT/neurons.csv`` (``--level neurons``, default), ``OUT/components.csv``, ``OUT/result.json``,
the full labelled result ``OUT/ranking.safetensors`` + ``ranking.json`` (reload with
``NeuronRanking.load``; ``toxlens edit`` and ``toxlens evaluate --dampen-from`` read it) and
``OUT/figures/``. See :mod:`patching.neurons` for the definitions.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from lens.errors import ToxlensError

LEVELS = ("neurons", "components")


def add_text_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("localisation from labelled text (--texts)")
    g.add_argument("--texts", default=None, help="labelled CSV (header row) or JSONL: rank units from text")
    g.add_argument("--text-col", default="text", help="column holding the text (default: text)")
    g.add_argument("--label-col", default="label", help="column holding the label (default: label)")
    g.add_argument("--positive-labels", default=None, help="comma list of label values that are toxic")
    g.add_argument(
        "--negative-labels", default=None, help="comma list of non-toxic values (default: the rest)"
    )
    g.add_argument("--limit", type=int, default=None, help="use at most N texts (seeded random subset)")
    g.add_argument("--balance", action="store_true", help="as many non-toxic as toxic texts (seeded)")
    g.add_argument("--seed", type=int, default=0, help="seed of --limit/--balance and the probe split")
    g.add_argument("--level", default="neurons", choices=LEVELS, help="neurons (default) or components")
    g.add_argument("--pooling", default="max", choices=["max", "mean"], help="neuron pooling over tokens")
    g.add_argument("--max-tokens", type=int, default=64, help="tokens kept per text (default: 64)")
    g.add_argument(
        "--n-attribution", type=int, default=128, help="toxic texts for the gradient ranking (0: skip)"
    )
    g.add_argument(
        "--attribution-target",
        default="probe",
        choices=["probe", "toxic-mass"],
        help="probe (default: label-derived) or toxic-mass (scorer-derived token set)",
    )


def _labels_arg(text: str | None, flag: str) -> list[str] | None:
    if text is None:
        return None
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise ToxlensError(f"{flag} expects a comma-separated list of label values, got {text!r}")
    return values


def check_text_args(args: argparse.Namespace) -> tuple[list[str], list[str] | None]:
    """Validate every --texts flag before anything is loaded."""
    positive = _labels_arg(args.positive_labels, "--positive-labels")
    if positive is None:
        raise ToxlensError("--texts needs --positive-labels V1,V2 (the label values that mark toxic text)")
    negative = _labels_arg(args.negative_labels, "--negative-labels")
    if negative is not None and set(positive) & set(negative):
        raise ToxlensError(f"labels {sorted(set(positive) & set(negative))} are both positive and negative")
    for flag, value, low in (
        ("--limit", args.limit, 4),
        ("--max-tokens", args.max_tokens, 1),
        ("--n-attribution", args.n_attribution, 0),
        ("--top-k", args.top_k, 1),
        ("--batch-size", args.batch_size, 1),
    ):
        if value is not None and value < low:
            raise ToxlensError(f"{flag} must be >= {low}, got {value}")
    if not Path(args.texts).is_file():
        raise ToxlensError(f"labelled text file {args.texts!r} does not exist")
    if args.toxic_words is not None:
        from lens.tokens import read_words

        read_words(args.toxic_words)
    return positive, negative


def run_texts(args: argparse.Namespace) -> int:
    from lens.io import atomic_directory, check_output_dir
    from lens.loading import check_model_spec, resolve_device
    from lens.probe import load_labelled
    from toxlens.common import check_device_map_args, file_sha256, load_from_args, select_rows

    positive, negative = check_text_args(args)
    inputs = [args.texts, args.toxic_words, args.model]
    check_output_dir(Path(args.out), args.overwrite, inputs)
    check_model_spec(args.model)
    resolve_device(args.device)
    check_device_map_args(args)
    texts, labels = load_labelled(args.texts, args.text_col, args.label_col, positive, negative)
    keep = select_rows(labels, args.limit, args.balance, args.seed)
    texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
    n_pos = sum(labels)
    if n_pos < 2 or len(labels) - n_pos < 2:
        raise ToxlensError(
            f"{args.texts}: the selected texts have {n_pos} toxic and {len(labels) - n_pos} non-toxic rows "
            f"(labels {positive} toxic); expected at least 2 of each class"
        )
    from lens.tokens import toxic_token_set
    from patching.neurons import rank_from_texts

    timings: dict[str, float] = {}
    t_all = t0 = time.perf_counter()
    model = load_from_args(args)
    timings["load_model_s"] = time.perf_counter() - t0
    tokens = toxic_token_set(model.tokenizer, args.toxic_words, args.multi_token)
    say = (lambda m: None) if args.no_progress else (lambda m: print(f"[locate] {m}", file=sys.stderr))
    t0 = time.perf_counter()
    import torch

    pooler = None
    from toxlens.workers_args import use_ray

    if use_ray(args):
        from toxlens.locate_texts_sharded import RayPooler

        pooler = RayPooler(args, args.pooling)
    ranking = rank_from_texts(
        model,
        texts,
        labels,
        pooling=args.pooling,
        batch_size=args.batch_size,
        prepend_bos=args.prepend_bos,
        max_tokens=args.max_tokens,
        n_attribution=args.n_attribution,
        attribution_target=args.attribution_target,
        toxic_ids=torch.tensor(tokens.ids),
        probe_seed=args.seed,
        progress=say,
        pooler=pooler,
    )
    timings["rank_s"] = time.perf_counter() - t0
    data = {
        "file": str(args.texts),
        "sha256": file_sha256(args.texts),
        "text_col": args.text_col,
        "label_col": args.label_col,
        "positive_labels": positive,
        "negative_labels": negative,
        "limit": args.limit,
        "balance": bool(args.balance),
        "seed": args.seed,
    }
    ranking.metadata["data"] = data
    ranking.metadata["toxic_token_set"] = tokens.to_dict()
    neurons = ranking.to_dataframe()
    comps = ranking.components_dataframe()
    with atomic_directory(args.out, args.overwrite, inputs) as stage:
        ranking.save(stage)
        if args.level == "neurons":
            neurons.to_csv(stage / "neurons.csv", index=False)
        comps.to_csv(stage / "components.csv", index=False)
        from figures.neurons import write_neuron_figures

        write_neuron_figures(ranking, stage / "figures", args.top_k)
        timings["total_s"] = time.perf_counter() - t_all
        info = _summary(ranking, neurons, comps, args, timings)
        if pooler is not None:
            info["workers"] = pooler.info
        (stage / "result.json").write_text(json.dumps(info, indent=2, default=str, allow_nan=False))
    print(f"top {args.top_k} neurons by AUROC ({ranking.metadata['pooling']} pooling):")
    print(
        neurons.head(args.top_k)[
            ["component", "auroc", "cos_probe", "toxic_logit_mass", "top_tokens"]
        ].to_string(index=False)
    )
    print(f"probe (last block, mean residual) held-out AUC {ranking.metadata['probe']['auc']:.3f}")
    written = "neurons.csv, " if args.level == "neurons" else ""
    print(f"wrote {args.out}/{written}components.csv, ranking.*, result.json, figures/")
    return 0


def _summary(
    ranking: Any, neurons: Any, comps: Any, args: argparse.Namespace, timings: dict[str, float]
) -> dict[str, Any]:
    def records(df: Any) -> list[dict[str, Any]]:
        return json.loads(df.to_json(orient="records"))

    auroc = ranking.neuron_auroc
    return {
        "kind": "locate-texts",
        "level": args.level,
        "model": ranking.metadata["model"],
        "ranking": {k: v for k, v in ranking.metadata.items() if k != "model"},
        "n_neurons": int(auroc.numel()),
        "n_neurons_auroc_above": {str(t): int((auroc > t).sum()) for t in (0.5, 0.6, 0.7, 0.8)},
        "top_neurons": records(neurons.head(args.top_k)),
        "top_components": records(comps.head(args.top_k)),
        "timings": timings,
        "argv": sys.argv[1:],
    }
