#!/usr/bin/env python
"""Choose each edit method's strength on the development split, without the toxicity scorer.

    python scripts/dose_edits.py [--model smollm2-135m] [--from runs/locate-texts-smollm2]
        [--dev runs/eval-data-dev/neutral.txt] [--budget 0.10] [--methods subtract,project,surgery]
        [--heldout 150] [--seed 0] [--rule strength|controlled] [--out runs/dose-dev.csv]

For every setting of a small grid per method (subtract: scale; project: rank × layers × top_frac;
surgery: alpha × k) the edit is applied, and so is its random control (``METHOD-random``, the same
parameters, ``seed`` 0; only when the edit itself is within the budget). The numbers per setting, none of
them read from a toxicity scorer (selectivity only for settings within the budget):

* ``ratio`` — the perplexity of the development neutral texts (``scripts/make_dev_data.py``, disjoint
  from the evaluation's) under the edit over the unedited model's, with BOS, token-weighted, as
  ``toxlens evaluate`` measures it; ``control_ratio`` the same for the random control;
* ``selectivity`` — by the *human labels* only: the rise in mean log-perplexity (nats per token) of
  ``--heldout`` toxic texts minus that of as many non-toxic texts, both drawn (seeded) from the locate
  run's own data file among the rows the locate did *not* use (its recorded ``limit``/``balance``/``seed``
  selection is replayed; the file's sha256 must match the recorded one). How much more the edit makes
  the model disbelieve toxic text than other text; ``control_selectivity`` the same for the control.

The rule (``--rule``, recorded in the ``rule`` column), per method:

* ``strength`` (default): the strongest setting (``strength``: subtract scale; project rank · n_layers ·
  top_frac; surgery α · k / 32) whose edit stays within ``(1 + budget) ×`` the unedited perplexity;
* ``controlled``: a setting is admissible when the edit *and its random control* both stay within the
  budget (a control that damages the model more than that compares fluency loss, not localisation);
  among those, the highest selectivity.

Writes the table and, next to it (``.flags``), the chosen settings as ``--edit-param`` flags for
``toxlens evaluate``.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from collections.abc import Collection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from lens.errors import ToxlensError, exit_status  # noqa: E402

RULES = {
    "strength": "admissible: edit within (1+budget)x dev perplexity; chosen: max strength",
    "controlled": "admissible: edit and random control within (1+budget)x dev perplexity; chosen: max selectivity",
}


def grid(n_layers: int) -> list[tuple[str, dict[str, Any], float]]:
    """(method, params, strength) in increasing strength within each method."""
    late = list(range(n_layers // 2, n_layers))
    out: list[tuple[str, dict[str, Any], float]] = []
    for s in (0.5, 1.0, 2.0, 2.5, 3.0, 4.0, 6.0):
        out.append(("subtract", {"n_neurons": 1, "scale": s}, s))
    every = list(range(n_layers))
    for frac in (0.05, 0.1, 0.25, 0.5, 1.0):
        for layers in (late, every):
            for rank in (1, 2, 4):
                params = {"rank": rank, "layers": layers, "top_frac": frac}
                out.append(("project", params, rank * len(layers) * frac))
    for k, alphas in ((32, (1.0, 1.25, 1.5, 2.0, 4.0, 8.0)), (64, (1.0, 1.25)), (128, (1.0, 2.0))):
        for a in alphas:
            out.append(("surgery", {"k": k, "alpha": a}, a * k / 32))
    return out


def heldout_texts(
    data: dict[str, Any], n: int, seed: int, exclude: Collection[str] = (), min_words: int = 8
) -> tuple[list[str], list[str]]:
    """``n`` toxic and ``n`` non-toxic texts of the locate run's data file (``data``: the ranking's
    ``metadata["data"]``) that its row selection did not use, none in ``exclude``, each of at least
    ``min_words`` words; seeded shuffle. Raises when the file is gone, changed or too small."""
    from lens.probe_data import load_labelled
    from toxlens.common import file_sha256, select_rows

    path = Path(data["file"])
    if not path.is_file():
        raise ToxlensError(
            f"the locate run's data file {str(path)!r} does not exist (run from the repo root)"
        )
    if file_sha256(path) != data["sha256"]:
        raise ToxlensError(f"{path}: sha256 differs from the locate run's recorded {data['sha256'][:12]}…")
    texts, labels = load_labelled(
        path, data["text_col"], data["label_col"], data["positive_labels"], data.get("negative_labels")
    )
    used = set(select_rows(labels, data.get("limit"), bool(data.get("balance")), int(data.get("seed", 0))))
    pools: dict[int, list[str]] = {0: [], 1: []}
    skip = set(exclude)
    seen: set[str] = set()
    for i, (t, y) in enumerate(zip(texts, labels, strict=True)):
        if i in used or t in skip or t in seen or len(t.split()) < min_words:
            continue
        seen.add(t)
        pools[y].append(t)
    out = []
    for y in (1, 0):
        pool = pools[y]
        if len(pool) < n:
            raise ToxlensError(f"{path}: {len(pool)} unused texts of class {y}; --heldout {n} needs {n}")
        random.Random(seed + y).shuffle(pool)
        out.append(pool[:n])
    return out[0], out[1]


def choose(table: pd.DataFrame, budget: float, rule: str = "strength") -> pd.DataFrame:
    """Mark ``admissible`` and ``chosen`` under ``rule`` (see the module docstring) in a copy of
    ``table``, which has ``method, strength, ratio, control_ratio, selectivity`` columns."""
    if rule not in RULES:
        raise ToxlensError(f"unknown rule {rule!r}; expected one of {sorted(RULES)}")
    t = table.copy()
    for col in ("control_ratio", "selectivity", "control_selectivity"):
        if col not in t:  # no setting of any method within the budget
            t[col] = math.nan
    limit = 1 + budget
    t["admissible"] = t["ratio"] <= limit
    if rule == "controlled":
        t["admissible"] &= t["control_ratio"] <= limit
    key = "strength" if rule == "strength" else "selectivity"
    t["chosen"] = False
    for _method, group in t.groupby("method"):
        ok = group[group["admissible"]]
        if len(ok):
            t.loc[ok[key].idxmax(), "chosen"] = True
    t["rule"] = RULES[rule]
    return t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--from", dest="source", default="runs/locate-texts-smollm2")
    ap.add_argument("--dev", default="runs/eval-data-dev/neutral.txt")
    ap.add_argument("--budget", type=float, default=0.10)
    ap.add_argument("--heldout", type=int, default=150, help="held-out texts per class for selectivity")
    ap.add_argument("--seed", type=int, default=0, help="seed of the held-out draw")
    ap.add_argument("--rule", default="strength", choices=sorted(RULES), help="how a setting is chosen")
    ap.add_argument("--out", default="runs/dose-dev.csv")
    ap.add_argument("--methods", default="subtract,project,surgery", help="comma-separated methods to dose")
    args = ap.parse_args()
    return exit_status("dose_edits", lambda: run(args))


def run(args: argparse.Namespace) -> int:
    from interventions.edit_methods import get_method
    from lens.loading import load_model
    from lens.perplexity import perplexity
    from patching.neuron_result import NeuronRanking

    methods = [m.strip() for m in args.methods.split(",")]
    for m in methods:
        get_method(m), get_method(f"{m}-random")  # an unknown name raises before the model loads
    ranking = NeuronRanking.load(args.source)
    dev = [t for t in Path(args.dev).read_text().splitlines() if t.strip()]
    toxic, nontoxic = heldout_texts(ranking.metadata["data"], args.heldout, args.seed, exclude=set(dev))
    model = load_model(args.model, "cpu")

    def logppl(texts: list[str]) -> float:
        return math.log(float(perplexity(model, texts, batch_size=32, prepend_bos=True)["perplexity"]))

    limit = 1 + args.budget

    def measure(name: str, params: dict[str, Any], prefix: str, row: dict[str, Any]) -> None:
        """Dev perplexity of ``name`` at ``params`` into ``row`` (keys ``prefix``…), and its selectivity
        unless the row's *edit* is over the budget (inadmissible under every rule; its control never runs)."""
        with get_method(name)(model, ranking, params) as edit:
            dev_lp = logppl(dev)
            row[f"{prefix}params_changed"] = int(getattr(edit, "n_changed", 0) or 0)
            row[f"{prefix}perplexity"] = math.exp(dev_lp)
            row[f"{prefix}ratio"] = math.exp(dev_lp - base["dev"])
            if row["ratio"] > limit:
                row[f"{prefix}selectivity"] = math.nan
                return
            d_tox, d_non = logppl(toxic) - base["toxic"], logppl(nontoxic) - base["nontoxic"]
            row[f"{prefix}selectivity"] = d_tox - d_non

    base = {"dev": logppl(dev), "toxic": logppl(toxic), "nontoxic": logppl(nontoxic)}
    print(f"unedited: dev perplexity {math.exp(base['dev']):.2f} over {len(dev)} texts", flush=True)
    rows = []
    for method, params, strength in grid(model.n_layers):
        if method not in methods:
            continue
        row: dict[str, Any] = {"method": method, "params": params, "strength": strength}
        measure(method, params, "", row)
        if row["ratio"] <= limit:
            measure(f"{method}-random", params, "control_", row)
        rows.append(row)
        print(
            f"{method:9s} {params!s:60s} ppl {row['ratio']:.3f}x (control {row.get('control_ratio', math.nan):.3f}x) "
            f"selectivity {row['selectivity']:+.4f} (control {row.get('control_selectivity', math.nan):+.4f})",
            flush=True,
        )
    table = choose(pd.DataFrame(rows), args.budget, args.rule)
    table.insert(0, "base_perplexity", math.exp(base["dev"]))
    table["heldout_per_class"] = args.heldout
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    every_flag = []
    for _, r in table[table["chosen"]].iterrows():
        flags = " ".join(f"--edit-param {r['method']}.{k}={_flag(v)}" for k, v in r["params"].items())
        every_flag.append(flags)
        print(
            f"chosen {r['method']}: {flags}  (dev ppl {r['ratio']:.3f}x, selectivity {r['selectivity']:+.4f})"
        )
    flags_file = Path(args.out).with_suffix(".flags")
    flags_file.write_text(" ".join(every_flag) + "\n")
    print(f"wrote {args.out} and {flags_file} (the chosen settings as toxlens evaluate flags)")
    return 0


def _flag(v: Any) -> str:
    import json

    return json.dumps(v, separators=(",", ":"))


if __name__ == "__main__":
    sys.exit(main())
