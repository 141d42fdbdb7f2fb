#!/usr/bin/env python
"""A development split for choosing edit strengths, disjoint from the evaluation prompts and neutral texts.

    python scripts/make_dev_data.py [--train runs/eval-data/probe_train.csv] [--out runs/eval-data-dev]
        [--n-prompts 50] [--n-neutral 100] [--seed 1]

``probe_train.csv`` (written by ``scripts/make_eval_data.py``) holds every Davidson tweet that is neither an
evaluation prompt's source nor an evaluation neutral text. From it, with the same rules as the evaluation
split (:func:`make_prompts`, :func:`make_neutral` of that script) and another seed, this writes
``prompts.jsonl`` (prefixes of offensive tweets) and ``neutral.txt`` (for perplexity); ``--prompt-class 2`` takes the prompts from *neither* tweets instead (the
scorer-floor measurement of ``scripts/scorer_floor.py``). Edit strengths are
chosen on this split; the evaluation split is only used to report the chosen setting.

A further held-out split: ``--exclude-located LOCATE_DIR`` leaves out every text a ``toxlens locate --texts``
run ranked its neurons on (the rows its ``result.json`` records: file, columns, labels, ``--limit``,
``--balance``, ``--seed``), and ``--exclude-prompts FILE`` (repeatable) every tweet that starts with a prompt of
another split, e.g.

    python scripts/make_dev_data.py --seed 2 --n-prompts 100 --n-neutral 200 \
        --exclude-located runs/locate-texts-smollm2 --exclude-prompts runs/eval-data-dev/prompts.jsonl \
        --out runs/eval-data-heldout
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

from make_eval_data import make_neutral, make_prompts  # noqa: E402

from lens.errors import ToxlensError, exit_status  # noqa: E402


def located_texts(locate_dir: str) -> set[str]:
    """The texts a ``toxlens locate --texts`` run used, re-selected from the file its result.json names."""
    from lens.probe import load_labelled
    from toxlens.common import select_rows

    path = Path(locate_dir) / "result.json"
    if not path.is_file():
        raise ToxlensError(
            f"--exclude-located {locate_dir!r}: no result.json (expected a locate --texts run)"
        )
    data = json.loads(path.read_text(encoding="utf-8")).get("ranking", {}).get("data")
    if not isinstance(data, dict) or "file" not in data:
        raise ToxlensError(
            f"--exclude-located {locate_dir!r}: result.json has no ranking.data (expected a locate --texts run)"
        )
    texts, labels = load_labelled(
        data["file"],
        data["text_col"],
        data["label_col"],
        data["positive_labels"],
        data.get("negative_labels"),
    )
    keep = select_rows(labels, data.get("limit"), bool(data.get("balance")), int(data.get("seed", 0)))
    return {texts[i] for i in keep}


def prompts_of(path: str) -> list[str]:
    from lens.textfiles import read_prompts

    if not Path(path).is_file():
        raise ToxlensError(f"--exclude-prompts {path!r}: no such file (expected a prompts.jsonl)")
    return read_prompts(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", default="runs/eval-data/probe_train.csv")
    ap.add_argument("--out", default="runs/eval-data-dev")
    ap.add_argument("--n-prompts", type=int, default=50)
    ap.add_argument("--n-neutral", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--prompt-class",
        default="1",
        choices=["1", "2"],
        help="Davidson class the prompts are prefixes of: 1 offensive (default), 2 neither (a floor: how "
        "toxic the model's continuations of non-offensive tweets score)",
    )
    ap.add_argument(
        "--exclude-located",
        metavar="LOCATE_DIR",
        help="leave out the texts this toxlens locate --texts run ranked its neurons on",
    )
    ap.add_argument(
        "--exclude-prompts",
        metavar="FILE",
        action="append",
        default=[],
        help="leave out tweets starting with a prompt of this prompts.jsonl (repeatable)",
    )
    args = ap.parse_args()

    def run() -> int:
        if not Path(args.train).is_file():
            raise ToxlensError(
                f"no {args.train}: run scripts/make_eval_data.py first (needs the Davidson data)"
            )
        with open(args.train, newline="") as f:
            rows = list(csv.DictReader(f))
        n_rows = len(rows)
        if args.exclude_located:
            used = located_texts(args.exclude_located)
            rows = [r for r in rows if r["tweet"] not in used]
        starts = tuple(p for path in args.exclude_prompts for p in prompts_of(path))
        if starts:
            rows = [r for r in rows if not r["tweet"].startswith(starts)]
        prompts = make_prompts(rows, args.n_prompts, args.seed, label=args.prompt_class)
        neutral = make_neutral(rows, args.n_neutral, args.seed)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
        (out / "neutral.txt").write_text("".join(t + "\n" for t in neutral))
        left = f" ({n_rows - len(rows)} of {n_rows} rows left out)" if len(rows) < n_rows else ""
        print(f"wrote {len(prompts)} prompts and {len(neutral)} neutral texts to {out}{left}")
        return 0

    return exit_status("make_dev_data", run)


if __name__ == "__main__":
    sys.exit(main())
