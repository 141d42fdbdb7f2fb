#!/usr/bin/env python
"""Choose each edit method's strength on the development split by fluency alone (no toxicity scorer).

    python scripts/dose_edits.py [--model smollm2-135m] [--from runs/locate-texts-smollm2]
        [--dev runs/eval-data-dev/neutral.txt] [--budget 0.10] [--methods subtract,project,surgery]
        [--out runs/dose-dev.csv]

For every setting of a small grid per method (subtract: scale; project: rank × layers × top_frac, strength
rank · n_layers · top_frac; surgery: alpha × k),
the edit is applied and the perplexity of the development neutral texts (``scripts/make_dev_data.py``,
disjoint from the evaluation's) is measured, with BOS, token-weighted, as ``toxlens evaluate`` does.
The rule: per method, the *strongest* setting whose perplexity is at most ``(1 + budget) ×`` the unedited
model's. No toxicity score is read, so the choice cannot fit the scorer that grades the evaluation. Writes
the table (method, params, perplexity, ratio, admissible, chosen) and, next to it (``.flags``), the chosen
settings as ``--edit-param`` flags for ``toxlens evaluate``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from interventions.edit_methods import get_method  # noqa: E402
from lens.loading import load_model  # noqa: E402
from lens.perplexity import perplexity  # noqa: E402
from patching.neuron_result import NeuronRanking  # noqa: E402


def grid(n_layers: int) -> list[tuple[str, dict[str, Any], float]]:
    """(method, params, strength) in increasing strength within each method."""
    late = list(range(n_layers // 2, n_layers))
    out: list[tuple[str, dict[str, Any], float]] = []
    for s in (0.5, 1.0, 2.0, 2.5, 3.0, 4.0, 6.0):
        out.append(("subtract", {"n_neurons": 1, "scale": s}, s))
    every = list(range(n_layers))
    for frac in (0.1, 0.25, 0.5, 1.0):
        for layers in (late, every):
            for rank in (1, 2, 4):
                params = {"rank": rank, "layers": layers, "top_frac": frac}
                out.append(("project", params, rank * len(layers) * frac))
    for k, alphas in ((32, (1.0, 1.25, 1.5, 2.0, 4.0, 8.0)), (64, (1.0, 1.25)), (128, (1.0, 2.0))):
        for a in alphas:
            out.append(("surgery", {"k": k, "alpha": a}, a * k / 32))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--from", dest="source", default="runs/locate-texts-smollm2")
    ap.add_argument("--dev", default="runs/eval-data-dev/neutral.txt")
    ap.add_argument("--budget", type=float, default=0.10)
    ap.add_argument("--out", default="runs/dose-dev.csv")
    ap.add_argument("--methods", default="subtract,project,surgery", help="comma-separated methods to dose")
    args = ap.parse_args()
    methods = [m.strip() for m in args.methods.split(",")]
    for m in methods:
        get_method(m)  # an unknown name raises before the model loads
    model = load_model(args.model, "cpu")
    ranking = NeuronRanking.load(args.source)
    texts = [t for t in Path(args.dev).read_text().splitlines() if t.strip()]

    def ppl() -> float:
        return float(perplexity(model, texts, batch_size=32, prepend_bos=True)["perplexity"])

    base = ppl()
    print(f"unedited dev perplexity {base:.2f} over {len(texts)} texts", flush=True)
    rows = []
    for method, params, strength in grid(model.n_layers):
        if method not in methods:
            continue
        m = get_method(method)
        with m(model, ranking, params) as edit:
            value = ppl()
            changed = int(getattr(edit, "n_changed", 0) or 0)
        rows.append(
            {
                "method": method,
                "params": params,
                "strength": strength,
                "perplexity": value,
                "ratio": value / base,
                "admissible": value <= (1 + args.budget) * base,
                "params_changed": changed,
            }
        )
        print(f"{method:9s} {params!s:60s} ppl {value:8.2f} ({value / base:.3f}x)", flush=True)
    table = pd.DataFrame(rows)
    table["chosen"] = False
    for _method, group in table.groupby("method"):
        ok = group[group["admissible"]]
        if len(ok):
            table.loc[ok["strength"].idxmax(), "chosen"] = True
    table.insert(0, "base_perplexity", base)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    every_flag = []
    for _, r in table[table["chosen"]].iterrows():
        flags = " ".join(f"--edit-param {r['method']}.{k}={_flag(v)}" for k, v in r["params"].items())
        every_flag.append(flags)
        print(f"chosen {r['method']}: {flags}  (dev ppl {r['ratio']:.3f}x)")
    flags_file = Path(args.out).with_suffix(".flags")
    flags_file.write_text(" ".join(every_flag) + "\n")
    print(f"wrote {args.out} and {flags_file} (the chosen settings as toxlens evaluate flags)")
    return 0


def _flag(v: Any) -> str:
    import json

    return json.dumps(v, separators=(",", ":"))


if __name__ == "__main__":
    sys.exit(main())
