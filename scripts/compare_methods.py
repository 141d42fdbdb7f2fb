"""Agreement of gradient-method variants with a saved activation-patching result, without re-running it.

    .venv/bin/python scripts/compare_methods.py --locate DIR [--pairs data/pairs.jsonl] [--metric toxic-mass|logit-diff]
        [--variants relp,relp-ah,ig:5,ig:10,ig-act:3]

DIR is a `toxlens locate` output holding `activation/` (the reference) and result.json (model, BOS). For each
variant prints Pearson/Spearman r against activation for heads, MLPs and all components, top-10 overlap and
seconds. Variants: attribution, relp, relp-ah, ig:M (inputs path, M steps), ig-act:M (activations path).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lens.loading import load_model
from lens.metrics import ToxicLogMass, logit_diff_from_pairs
from lens.prompts import load_pairs
from lens.tokens import toxic_token_set
from patching.agreement import agreement_stats
from patching.attribution import attribution_patching
from patching.ig import integrated_gradients
from patching.locate import LocateResult
from patching.relp import relevance_patching
from patching.result import PatchResult


def run_variant(name: str, model, pairs, metric) -> PatchResult:  # type: ignore[no-untyped-def]
    if name == "attribution":
        return attribution_patching(model, pairs, metric)
    if name in ("relp", "relp-ah"):
        return relevance_patching(model, pairs, metric, ah_rule=name == "relp-ah")
    kind, steps = name.split(":")
    mode = "activations" if kind == "ig-act" else "inputs"
    return integrated_gradients(model, pairs, metric, steps=int(steps), mode=mode)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--locate", required=True)
    ap.add_argument("--pairs", default="data/pairs.jsonl")
    ap.add_argument("--metric", default="toxic-mass", choices=["toxic-mass", "logit-diff"])
    ap.add_argument("--variants", default="attribution,relp,relp-ah,ig:5,ig:10")
    args = ap.parse_args()
    info = json.loads((Path(args.locate) / "result.json").read_text())
    activation = PatchResult.load(Path(args.locate) / "activation")
    model = load_model(info["model"]["spec"])
    pairs = load_pairs(args.pairs, model, prepend_bos=info["prepend_bos"])
    if args.metric == "logit-diff":
        metric = logit_diff_from_pairs(pairs, model.tokenizer)
    else:
        tokens = toxic_token_set(model.tokenizer)
        metric = ToxicLogMass(tokens.ids, tokens.to_dict())
    for name in args.variants.split(","):
        t0 = time.perf_counter()
        result = run_variant(name, model, pairs, metric)
        seconds = time.perf_counter() - t0
        table = LocateResult({"activation": activation, result.method: result}).table()
        parts = []
        for label, kind in (("heads", "head"), ("mlps", "mlp"), ("all", None)):
            s = agreement_stats(table, result.method, kind)
            parts.append(
                f"{label} r={s['pearson']:.3f} rho={s['spearman']:.3f} top10={s['top10_overlap']:.1f}"
            )
        print(f"{name:12s} {'; '.join(parts)}; {seconds:.1f} s", flush=True)


if __name__ == "__main__":
    main()
