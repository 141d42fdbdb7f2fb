"""Causal check of a `toxlens locate` ranking: mean-ablate the top-k heads vs random sets of k heads.

    .venv/bin/python bench/causal_check.py --locate runs/locate-smollm2 [--model smollm2-135m] [--k 10] [--n-random 50]

Drop = m(toxic prompts) − m(toxic prompts with the chosen heads' hook_z replaced by their mean over the benign
prompts, all positions), m = the locate run's default metric (toxic log-mass at the last position), averaged over
the pairs. The top-k heads come from DIR/components.csv (kind == head, by rank). Random sets: k heads drawn
uniformly without replacement, ``--n-random`` times, seeded.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from interventions.edits import ablate
from lens.components import head_name
from lens.loading import load_model
from lens.metrics import ToxicLogMass
from lens.model import LensModel
from lens.prompts import ContrastPairs, load_pairs
from lens.tokens import toxic_token_set


@torch.no_grad()
def toxic_mass(model: LensModel, pairs: ContrastPairs, metric: ToxicLogMass) -> float:
    total = 0.0
    for _length, idx in pairs.length_groups().items():
        logits = model.final_logits(pairs.tokens(idx, "toxic"))
        total += float(metric(logits, torch.tensor(idx)).sum())
    return total / len(pairs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--locate", required=True, help="output directory of `toxlens locate`")
    ap.add_argument("--model", default=None, help="default: the model recorded in DIR/result.json")
    ap.add_argument("--pairs", default=str(Path(__file__).resolve().parents[1] / "data" / "pairs.jsonl"))
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--n-random", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = ap.parse_args()
    info = json.loads((Path(args.locate) / "result.json").read_text())
    table = pd.read_csv(Path(args.locate) / "components.csv")
    model = load_model(args.model or info["model"]["spec"])
    pairs = load_pairs(args.pairs, model, prepend_bos=info["prepend_bos"])
    tokens = toxic_token_set(model.tokenizer)
    metric = ToxicLogMass(tokens.ids, tokens.to_dict())
    benign = [p.benign for p in pairs.pairs]
    heads = table[table["kind"] == "head"].sort_values("rank")
    top = [str(c) for c in heads["component"].head(args.k)]

    base = toxic_mass(model, pairs, metric)

    def drop(names: list[str]) -> float:
        with ablate(model, names, mode="mean", reference=benign, prepend_bos=pairs.prepend_bos):
            return base - toxic_mass(model, pairs, metric)

    top_drop = drop(top)
    rng = random.Random(args.seed)
    all_heads = [head_name(layer, h) for layer in range(model.n_layers) for h in range(model.n_heads)]
    random_drops = [drop(rng.sample(all_heads, args.k)) for _ in range(args.n_random)]
    rd = torch.tensor(random_drops)
    at_least = int((rd >= top_drop).sum())
    result = {
        "model": model.spec,
        "k": args.k,
        "top_heads": top,
        "m_toxic": base,
        "top_k_drop": top_drop,
        "random_drop_mean": float(rd.mean()),
        "random_drop_std": float(rd.std()),
        "random_drop_min": float(rd.min()),
        "random_drop_max": float(rd.max()),
        "random_sets_dropping_at_least_as_much": at_least,
        "n_random": args.n_random,
        "z_score": float((top_drop - rd.mean()) / rd.std()) if rd.std() > 0 else None,
    }
    print(f"m(toxic) = {base:.4f} (log toxic mass, mean over {len(pairs)} pairs)")
    print(f"top-{args.k} heads {top}: drop {top_drop:.4f}")
    print(
        f"{args.n_random} random sets of {args.k} heads: drop mean {rd.mean():.4f} ± {rd.std():.4f} "
        f"(min {rd.min():.4f}, max {rd.max():.4f}); {at_least}/{args.n_random} random sets drop as much or more"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
