"""How much of the toxicity of continuations repeats the prompt's own profanity?

``python scripts/copy_analysis.py EVAL_DIR [--condition none]``: for every sample the scorer flags (score ≥ 0.5),
whether a word of the continuation that better-profanity's list flags also occurs in the prompt (copied), or is
new. Reads ``EVAL_DIR/samples.jsonl`` (``toxlens evaluate``); prints the shares per condition.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

WORD = re.compile(r"[A-Za-z']+")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("eval_dir")
    args = p.parse_args()
    from better_profanity import Profanity

    prof = Profanity()
    prof.load_censor_words()
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for line in (Path(args.eval_dir) / "samples.jsonl").open():
        s = json.loads(line)
        c = counts[s["condition"]]
        c["samples"] += 1
        if s["score"] < 0.5:
            continue
        c["flagged"] += 1
        bad = {w.lower() for w in WORD.findall(s["text"]) if prof.contains_profanity(w)}
        prompt_words = {w.lower() for w in WORD.findall(s["prompt"])}
        if not bad:
            c["flagged_no_listed_word"] += 1
        elif bad & prompt_words:
            c["flagged_copies_prompt_word"] += 1
        else:
            c["flagged_new_word"] += 1
    for cond, c in counts.items():
        f = max(c["flagged"], 1)
        print(
            f"{cond:>18}: {c['flagged']}/{c['samples']} flagged; of those: repeats a listed word of the prompt "
            f"{c['flagged_copies_prompt_word'] / f:.0%}, a new listed word {c['flagged_new_word'] / f:.0%}, "
            f"no listed word {c['flagged_no_listed_word'] / f:.0%}"
        )


if __name__ == "__main__":
    main()
