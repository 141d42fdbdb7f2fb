#!/usr/bin/env python
"""A labelled CSV without the source texts of some prompt sets (a leak-free training file for monitors).

    python scripts/exclude_prompts.py --texts runs/eval-data/probe_train.csv --text-col tweet \\
        --exclude-prompts runs/eval-data-heldout/prompts.jsonl --exclude-prompts runs/eval-data-dev/prompts.jsonl \\
        --out runs/eval-data/probe_train_clean.csv

Keeps every row of ``--texts`` (same columns, same order) whose ``--text-col`` does not start with a prompt
of any ``--exclude-prompts`` file: a monitor or word list built from the output has never read the tweets
those prompts were cut from. Prints how many rows were left out; the file is written whole or not at all.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

from make_dev_data import prompts_of  # noqa: E402

from lens.errors import ToxlensError, exit_status  # noqa: E402
from lens.io import atomic_file  # noqa: E402


def keep_rows(
    rows: list[dict[str, str]], text_col: str, prompts: list[str]
) -> tuple[list[dict[str, str]], int]:
    """The rows whose ``text_col`` starts with none of ``prompts``, and how many were left out."""
    starts = tuple(p for p in prompts if p)  # an empty prompt would match every row
    kept = [r for r in rows if not r[text_col].startswith(starts)]
    return kept, len(rows) - len(kept)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--texts", required=True, help="labelled CSV")
    ap.add_argument("--text-col", required=True)
    ap.add_argument(
        "--exclude-prompts",
        metavar="FILE",
        action="append",
        required=True,
        help="leave out rows whose text starts with a prompt of this prompts.jsonl (repeatable)",
    )
    ap.add_argument("--out", required=True, help="CSV to write")
    args = ap.parse_args()

    def run() -> int:
        src, out = Path(args.texts), Path(args.out)
        if not src.is_file():
            raise ToxlensError(f"--texts {args.texts!r}: no such file (expected a labelled CSV)")
        if out.resolve() == src.resolve():
            raise ToxlensError(f"--out {args.out!r} is --texts itself; expected another file")
        prompts = [p for path in args.exclude_prompts for p in prompts_of(path)]
        with src.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            fields = list(reader.fieldnames or [])
            rows = list(reader)
        if args.text_col not in fields:
            raise ToxlensError(
                f"--text-col {args.text_col!r} is not a column of {args.texts!r}; columns: {fields}"
            )
        kept, dropped = keep_rows(rows, args.text_col, prompts)

        def write(tmp: str) -> None:
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=fields)
                writer.writeheader()
                writer.writerows(kept)

        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_file(out, write)
        print(
            f"wrote {len(kept)} of {len(rows)} rows to {out} ({dropped} left out: they start with one "
            f"of {len(prompts)} prompts)"
        )
        return 0

    return exit_status("exclude_prompts", run)


if __name__ == "__main__":
    sys.exit(main())
