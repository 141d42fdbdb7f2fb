"""Compare saved token monitors (e.g. the MIL ``--pooling max`` probe and the lexicon-labelled token
probe) on texts neither was trained on: rows ``[offset, offset + n)`` of a labelled file.

    python scripts/compare_monitors.py --model smollm2-135m --data ../shared/data/davidson/labeled_data.csv \\
        --text-col tweet --label-col class --positive-labels 0,1 --offset 4000 --n 2000 \\
        --probes runs/probe-mil,runs/probe-lexicon

Per probe (texts balanced, seeded): the text AUC of the max token score; the per-token AUC against the
lexicon token labels (alt-profanity-check's vocabulary: an *external* check for the MIL probe, the training
target of the lexicon probe); and at each threshold the share of the tokens of non-toxic texts that fire,
the share of toxic texts with at least one firing token, and the share of lexicon-positive tokens that fire.
With ``--token-words FILE`` (e.g. ``scripts/label_words.py``'s list, from human text labels) one more column:
the per-token AUC against that list's token labels (``lens.token_probe.word_list_token_labels``). Prints a
Markdown table and writes nothing.
"""

from __future__ import annotations

import argparse

import torch

from lens.loading import load_model
from lens.probe import HOOKS, Probe, length_batches, load_labelled, roc_auc, tokenize_texts
from lens.token_probe import lexicon_token_labels, word_list_token_labels
from lens.tokens import read_words
from toxlens.cli_probe import balance


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--text-col", default="text")
    ap.add_argument("--label-col", default="label")
    ap.add_argument("--positive-labels", required=True)
    ap.add_argument("--offset", type=int, required=True, help="first row used (rows before it: training)")
    ap.add_argument("--n", type=int, default=2000, help="rows read from --offset")
    ap.add_argument("--probes", required=True, help="comma list of probe directories")
    ap.add_argument("--thresholds", default="0.1,0.3,0.5,0.7")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--token-words", default=None, help="word list: adds the token AUC against its labels")
    args = ap.parse_args()
    dirs = args.probes.split(",")
    probes = [Probe.load(d) for d in dirs]
    ts = [float(t) for t in args.thresholds.split(",")]
    texts, labels = load_labelled(
        args.data, args.text_col, args.label_col, args.positive_labels.split(","), limit=args.offset + args.n
    )
    texts, labels = texts[args.offset :], labels[args.offset :]
    keep = balance(labels, args.seed)
    texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
    model = load_model(args.model, "cpu")
    ids = tokenize_texts(model, texts, False, args.max_tokens)
    names = sorted({HOOKS[p.hook](p.layer) for p in probes})
    stop = max(p.layer for p in probes) + 1
    per: dict[str, list[torch.Tensor | None]] = {n: [None] * len(ids) for n in names}
    with torch.no_grad():
        for rows, seen in length_batches(model, ids, names, stop, 32):
            for n in names:
                for k, i in enumerate(rows):
                    per[n][i] = seen[n][k].float().cpu()
    index = torch.cat([torch.full((len(r),), i, dtype=torch.long) for i, r in enumerate(ids)])
    lex = torch.tensor([v for row in lexicon_token_labels(model, texts, ids) for v in row])
    listed = None
    if args.token_words is not None:
        listed = torch.tensor(
            [
                v
                for row in word_list_token_labels(model, texts, ids, read_words(args.token_words))
                for v in row
            ]
        )
    y = torch.tensor(labels)
    tox_tok = y[index] == 1
    print(
        f"{len(texts)} texts ({int(y.sum())} toxic), {len(index)} tokens ({int(lex.sum())} lexicon-positive), "
        f"rows {args.offset}..{args.offset + args.n - 1} of {args.data}"
        + (f"; {int(listed.sum())} tokens in a word of {args.token_words}" if listed is not None else "")
        + "\n"
    )
    extra = "token AUC vs word list | " if listed is not None else ""
    head = f"| probe | text AUC | token AUC vs lexicon | {extra}" + " | ".join(
        f"@{t:g}: non-toxic tokens firing / toxic texts caught / lexicon tokens caught" for t in ts
    )
    print(head + " |")
    print("|" + "---|" * (3 + len(ts) + (listed is not None)))
    for d, p in zip(dirs, probes):
        feats = torch.cat([t for t in per[HOOKS[p.hook](p.layer)] if t is not None])
        s = p.score(feats)
        text_max = torch.full((len(texts),), -1.0).scatter_reduce(0, index, s, "amax")
        cells = [
            f"{float((s[~tox_tok] >= t).float().mean()):.3f} / {float((text_max[y == 1] >= t).float().mean()):.3f}"
            f" / {float((s[lex == 1] >= t).float().mean()):.3f}"
            for t in ts
        ]
        name = f"{d} ({p.pooling}, L{p.layer})"
        auc_words = f"{roc_auc(s, listed):.3f} | " if listed is not None else ""
        print(
            f"| {name} | {roc_auc(text_max, y):.3f} | {roc_auc(s, lex):.3f} | {auc_words}"
            + " | ".join(cells)
            + " |"
        )


if __name__ == "__main__":
    main()
