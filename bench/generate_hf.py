"""Hugging Face ``model.generate`` on the same module, prompts and sampling as toxlens (bench/bench_generate.py,
part 0): sampled with its own draws, or replaying toxlens's tokens so both sides do the same work."""

from __future__ import annotations

import argparse
import copy
import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from torch import Tensor
from transformers import LogitsProcessor

from interventions.generate import generate
from interventions.policy import Generation
from interventions.sampling import Sampling
from lens.kv_cache import shimmed
from lens.model import LensModel


def hf_generator(args: argparse.Namespace, model: LensModel, prompts: list[str]) -> Any:
    """A function that runs Hugging Face ``model.generate`` on the same module, prompts, batch size and
    sampling (temperature 1, no top-k / top-p), left-padded, stopping at EOS, and returns the number of
    tokens generated (each row's tokens before its EOS). Checks first that greedy HF generation draws the
    same tokens as greedy toxlens generation (the cache really is used)."""
    hf = model.bridge.original_model
    tok = copy.deepcopy(model.tokenizer)
    tok.padding_side = "left"
    eos = tok.eos_token_id
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token

    def batches(n_new: int, forced: Tensor | None = None, **kw: Any) -> list[list[int]]:
        rows: list[list[int]] = []
        for start in range(0, len(prompts), args.batch_size):
            enc = tok(prompts[start : start + args.batch_size], return_tensors="pt", padding=True)
            enc = {k: v.to(model.device) for k, v in enc.items()}
            width = enc["input_ids"].shape[1]
            if forced is not None:
                kw["logits_processor"] = [Replay(forced[start : start + args.batch_size], width)]
            with torch.no_grad(), shimmed(model.blocks):
                out = hf.generate(
                    **enc, max_new_tokens=n_new, pad_token_id=tok.pad_token_id, eos_token_id=eos, **kw
                )
            rows.extend(out[:, enc["input_ids"].shape[1] :].tolist())
        return rows

    mine = generate(model, prompts, 8, sampling=Sampling(greedy=True), batch_size=args.batch_size)
    theirs = batches(8, do_sample=False)
    same = [g.tokens == (row[: row.index(eos)] if eos in row else row) for g, row in zip(mine, theirs)]
    print(
        f"greedy HF generate draws the same tokens as greedy toxlens generate: {sum(same)}/{len(same)} rows"
    )
    if not all(same):
        raise SystemExit("HF generate and toxlens disagree on greedy tokens: the comparison would be unfair")

    def count(rows: list[list[int]]) -> int:
        return sum(row.index(eos) if eos in row else len(row) for row in rows)

    sample: dict[str, Any] = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0)

    if args.no_eos:  # every row generates max_new_tokens tokens, as toxlens does with stop_at_eos=False
        sample["min_new_tokens"] = args.max_new_tokens

    def sampled() -> int:
        return count(batches(args.max_new_tokens, **sample))

    def replay(gens: list[Generation]) -> int:
        n_new = args.max_new_tokens
        forced = torch.full((len(gens), n_new), eos, dtype=torch.long)
        for i, g in enumerate(gens):
            forced[i, : len(g.tokens)] = torch.tensor(g.tokens, dtype=torch.long)
        rows = batches(n_new, forced, **sample)
        got = [row[: row.index(eos)] if eos in row else row for row in rows]
        if got != [g.tokens for g in gens]:
            raise SystemExit("HF generate did not replay toxlens's tokens")
        return count(rows)

    return {"sampled": sampled, "replay": replay}


class Replay(LogitsProcessor):
    """Forces ``forced[row, t]`` as the ``t``-th new token of a batch whose prompts are ``width`` tokens
    wide (every other token gets -inf): HF generate then draws exactly these tokens."""

    def __init__(self, forced: Tensor, width: int) -> None:
        self.forced, self.width = forced, width

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        t = input_ids.shape[1] - self.width
        out = torch.full_like(scores, -math.inf)
        return out.scatter_(1, self.forced[:, t : t + 1].to(scores.device), 0.0)
