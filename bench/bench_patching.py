"""Benchmark: toxlens's head sweep vs TransformerLens's own activation patching, in one process.

    .venv/bin/python bench/bench_patching.py [--model smollm2-135m] [--pairs data/pairs.jsonl] [--n-pairs 12]

Runs, on the same model and pairs:
  1. TransformerLens ``patching.get_act_patch_attn_head_out_all_pos`` (one length group at a time: it needs
     one batch of equal-length prompts; the clean cache, hook_z only, is timed as part of it);
  2. ``patching.activation.activation_patching(..., target="heads")``;
checks that both give the same per-head metric (max |diff| printed, must be < 1e-3 in float32) and prints
the speed ratio. Then times attribution patching over all heads and MLPs as a multiple of one plain
forward pass (``bridge(tokens)``) over the same prompts. Pass --repeat N to take the best of N.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lens.loading import load_model
from lens.metrics import ToxicLogMass
from lens.prompts import ContrastPairs, load_pairs
from lens.tokens import toxic_token_set
from patching.activation import activation_patching
from patching.attribution import attribution_patching


def best_of(n: int, fn):  # type: ignore[no-untyped-def]
    times, out = [], None
    for _ in range(n):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def tl_head_sweep(model, pairs: ContrastPairs, metric: ToxicLogMass) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """TransformerLens's activation patching; returns the per-head metric averaged over all pairs."""
    from transformer_lens import patching

    bridge = model.bridge
    total = torch.zeros(model.n_layers, model.n_heads)
    for _length, idx in pairs.length_groups().items():
        toxic, benign = (
            pairs.tokens(idx, "toxic").to(model.device),
            pairs.tokens(idx, "benign").to(model.device),
        )
        _, toxic_cache = bridge.run_with_cache(toxic, names_filter=lambda name: name.endswith("attn.hook_z"))
        rows = torch.arange(len(idx))

        def tl_metric(logits: torch.Tensor, rows: torch.Tensor = rows) -> torch.Tensor:
            return metric(logits[:, -1], rows).mean()

        with torch.no_grad():
            out = patching.get_act_patch_attn_head_out_all_pos(bridge, benign, toxic_cache, tl_metric)
        total += out.detach().float().cpu() * len(idx)
    return total / len(pairs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--pairs", default=str(Path(__file__).resolve().parents[1] / "data" / "pairs.jsonl"))
    ap.add_argument("--n-pairs", type=int, default=12)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--device", default=None)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = load_model(args.model, args.device)
    pairs = load_pairs(args.pairs, model)
    pairs = ContrastPairs(pairs.pairs[: args.n_pairs], pairs.source, pairs.prepend_bos)
    tokens = toxic_token_set(model.tokenizer)
    metric = ToxicLogMass(tokens.ids, tokens.to_dict())
    print(
        f"model {args.model} ({model.info.n_layers} layers x {model.info.n_heads} heads, {model.info.device}, "
        f"torch threads {torch.get_num_threads()}); {len(pairs)} pairs, lengths "
        f"{ {k: len(v) for k, v in pairs.length_groups().items()} }; {len(tokens.ids)} toxic tokens"
    )

    with torch.no_grad():  # warm-up (first-call set-up inside the bridge)
        model.bridge(pairs.tokens(pairs.length_groups()[next(iter(pairs.length_groups()))], "benign")[:1])
    t_tl, tl = best_of(args.repeat, lambda: tl_head_sweep(model, pairs, metric))
    t_tx, res = best_of(
        args.repeat, lambda: activation_patching(model, pairs, metric, "heads", progress=False)
    )
    ours = res.patched.mean(0)
    diff = (ours - tl).abs().max().item()
    print(f"TransformerLens get_act_patch_attn_head_out_all_pos: {t_tl:8.2f} s")
    print(f"toxlens activation_patching(target='heads'):         {t_tx:8.2f} s")
    print(
        f"same scores: max |diff| of the per-head metric = {diff:.2e} ({'OK' if diff < 1e-3 else 'MISMATCH'})"
    )
    print(f"speed-up: {t_tl / t_tx:.2f}x (target >= 3x)")

    def one_forward() -> None:
        with torch.no_grad():
            for _length, idx in pairs.length_groups().items():
                model.bridge(pairs.tokens(idx, "benign").to(model.device))

    t_fwd, _ = best_of(max(3, args.repeat), one_forward)
    t_attr, _ = best_of(args.repeat, lambda: attribution_patching(model, pairs, metric, "components"))
    print(
        f"one forward pass over the same prompts: {t_fwd:.3f} s; attribution patching (all heads + MLPs): "
        f"{t_attr:.3f} s = {t_attr / t_fwd:.2f} forward passes (target <= 4)"
    )
    if diff >= 1e-3:
        raise SystemExit("scores differ between TransformerLens and toxlens")


if __name__ == "__main__":
    main()
