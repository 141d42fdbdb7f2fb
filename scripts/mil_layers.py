"""Held-out quality of the multiple-instance (MIL) token probe at several layers, from one forward pass.

Used to choose ``toxlens probe train``'s default layer. Example (SmolLM2, Davidson):

    python scripts/mil_layers.py --model smollm2-135m --data ../shared/data/davidson/labeled_data.csv \\
        --text-col tweet --label-col class --positive-labels 0,1 --limit 4000 --layers 3,6,9,12,15,18,21,24,27

Prints one row per layer: held-out text AUC, and per-token firing at 0.5 (tokens of non-toxic texts,
recall of toxic texts), plus the per-token AUC against lexicon token labels (alt-profanity-check's
vocabulary, an *external* check only: the probe never sees them).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from lens.loading import load_model
from lens.mil_probe import fit_mil_probe
from lens.probe import HOOKS, length_batches, load_labelled, roc_auc, split, tokenize_texts
from lens.token_probe import lexicon_token_labels
from toxlens.cli_probe import balance


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--text-col", default="text")
    ap.add_argument("--label-col", default="label")
    ap.add_argument("--positive-labels", required=True)
    ap.add_argument("--limit", type=int, default=4000)
    ap.add_argument("--layers", required=True, help="comma list")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--C", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--aggregation", default="max", help="comma list: one fit per aggregation and layer")
    args = ap.parse_args()
    layers = [int(x) for x in args.layers.split(",")]
    texts, labels = load_labelled(
        args.data, args.text_col, args.label_col, args.positive_labels.split(","), limit=args.limit
    )
    keep = balance(labels, args.seed)
    texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
    model = load_model(args.model, "cpu")
    t0 = time.perf_counter()
    ids = tokenize_texts(model, texts, False, args.max_tokens)
    names = {HOOKS["resid_post"](layer): layer for layer in layers}
    per: dict[int, list[torch.Tensor | None]] = {layer: [None] * len(ids) for layer in layers}
    with torch.no_grad():
        for rows, seen in length_batches(model, ids, list(names), max(layers) + 1, 32):
            for name, layer in names.items():
                for k, i in enumerate(rows):
                    per[layer][i] = seen[name][k].float().cpu()
    index = torch.cat([torch.full((len(r),), i, dtype=torch.long) for i, r in enumerate(ids)])
    lex = torch.tensor([v for row in lexicon_token_labels(model, texts, ids) for v in row])
    y = torch.tensor(labels)
    _, test = split(y, 0.25, args.seed)
    is_test = torch.isin(index, torch.tensor(test))
    print(f"# {len(texts)} texts, {len(index)} tokens, features in {time.perf_counter() - t0:.0f} s")
    for layer, aggregation in [(a, b) for a in layers for b in args.aggregation.split(",")]:
        feats = torch.cat([t for t in per[layer] if t is not None])
        probe = fit_mil_probe(
            feats, index, y, layer, "resid_post", aggregation, 0.25, args.seed, args.C, args.steps
        )
        ev = probe.metadata["token_eval"]
        k = ev["thresholds"].index(0.5)
        lex_auc = roc_auc(probe.score(feats[is_test]), lex[is_test])
        row = {
            "layer": layer,
            "aggregation": aggregation,
            "text_auc": probe.metadata["auc"],
            "fire_nontoxic_tokens@0.5": ev["token_fire_rate_nontoxic_texts"][k],
            "recall@0.5": ev["text_recall"][k],
            "lexicon_token_auc": lex_auc,
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
