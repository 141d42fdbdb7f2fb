"""Benchmark: monitored generation (probe read every token, rollback armed) vs plain generation.

    .venv/bin/python bench/bench_generate.py [--model smollm2-135m] [--probe DIR] [--prompts 8]
        [--max-new-tokens 32] [--repeats 3] [--batch-size 16] [--seed 0] [--threads N] [--no-eos] [--out FILE.json]

0. **Against Hugging Face.** ``model.generate`` of the same module (the bridge's HF model) with the same
   prompts, batch size and sampling (temperature 1, no top-k/top-p, left padding, stop at EOS) is timed
   in part 1's loop, interleaved with plain and monitored generation; tokens/s of plain and monitored
   generation are reported relative to it (issue targets: ≥ 0.9 and ≥ 0.85). It runs inside
   :func:`lens.kv_cache.shimmed`, as toxlens does: without it the bridge's attention never writes the KV
   cache, so every step attends to its own token only (garbage text that never reaches EOS, and a cheaper
   forward). Checked first: greedy ``model.generate`` draws the same tokens as greedy toxlens generation.
   Tokens are counted as toxlens counts them: up to each row's EOS, the EOS itself excluded. Two HF runs:
   *sampled* (its own random draws: how many rows reach EOS, and when, differs by chance from toxlens's
   draws, and with 8 rows x 32 tokens one early EOS moves tokens/s by several percent) and *replayed*
   (a logits processor forces, after HF's own logits, exactly the tokens and EOS steps of toxlens's plain
   run; temperature, softmax and multinomial still run on the full vocabulary): the same work on both
   sides, so that ratio compares the implementations. Both ratios are printed and written, from the
   medians and from the best of the repeats on each side (the runs least slowed down by other work), and
   from the median CPU seconds of the process (with ``--threads 1``, the time other work takes the cores
   is left out; the least noisy of the three on a shared machine). With ``--no-eos`` every row runs
   ``--max-new-tokens`` on both sides (toxlens ``stop_at_eos=False``; HF ``min_new_tokens``, which masks
   EOS), so the *sampled* comparison does equal work under each side's own draws (no replayed run then).
1. **Overhead of the monitor.** In one process, after one warm-up of each, alternately times
   ``generate(model, prompts, N, seed=s, sampling=Sampling(temperature=1.0))`` (plain) and the same call
   with ``monitor=probe, threshold=0.99, policy=RollbackPolicy(safe_threshold=0.5)`` (monitored).
   The probe must never fire (checked: zero rollbacks; without ``--probe`` a random-direction probe at
   the middle layer with bias −1e4 is used, whose score is ~0 everywhere), so both calls must return
   the same tokens (checked). Prints median wall times, the ratio monitored / plain (target ≤ 1.10)
   and tokens/s. The monitored call also feeds each sequence's last token (so that token gets a score)
   and builds the tokenizer's word-start table once per call; both are part of the measured cost.
2. **Cost of a rollback.** A scripted probe (a :class:`~lens.probe.Probe` whose ``score`` follows a
   schedule instead of reading the residual) forces exactly one rollback of ``n`` tokens, n = 1, 4, 8,
   on one prompt: it scores 0.6 (≥ safe_threshold, < threshold, so no safe point can form there) on the
   ``n − 1`` tokens after a chosen safe point and 1.0 on the next one. Printed for each ``n``, without
   and with corrective steering (``policy.steer_scale``): the RollbackEvent (discarded tokens),
   ``recomputed``, and ``forward_tokens`` minus that of the same call with a probe that never fires.
   Without corrective steering the difference is ``n`` (the safe point's stored logits are reused); with
   it ``n + 1`` (the safe-point token itself is fed again, with the corrective steer added).

On a CPU shared with other work, ``--threads 1`` avoids thread oversubscription: with torch's default of
one thread per core on 2 busy cores, a decoding step here took about ten times longer and timings were noise.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from generate_hf import hf_generator
from generate_probes import SAFE_THRESHOLD, THRESHOLD, cpu_timed, silent_probe, timed, token_count
from rollback_cost import forced_rollbacks, print_rollbacks

from interventions.generate import generate
from interventions.policy import Generation, RollbackPolicy
from interventions.sampling import Sampling, word_starts
from lens.loading import load_model
from lens.model import LensModel
from lens.probe import Probe

PROMPTS = (
    "The weather today is",
    "My favourite recipe uses",
    "The best way to learn a new language is",
    "Yesterday I went to the library and",
    "The train to the city leaves at",
    "In the garden we planted",
    "A good book for a long trip is",
    "The museum opens its new exhibition on",
    "To fix a slow computer, first",
    "Our team meeting next week will cover",
    "The river near my house",
    "For breakfast I usually have",
)


def overhead(
    args: argparse.Namespace, model: LensModel, probe: Probe, prompts: list[str], hf: dict[str, Any]
) -> dict[str, Any]:
    sampling = Sampling(temperature=1.0)
    policy = RollbackPolicy(safe_threshold=SAFE_THRESHOLD)

    common: dict[str, Any] = dict(
        seed=args.seed, sampling=sampling, batch_size=args.batch_size, stop_at_eos=not args.no_eos
    )

    def plain() -> list[Generation]:
        return generate(model, prompts, args.max_new_tokens, **common)

    def monitored() -> list[Generation]:
        return generate(
            model, prompts, args.max_new_tokens, monitor=probe, threshold=THRESHOLD, policy=policy, **common
        )

    first = plain()  # warm-up of each
    monitored()

    def replayed() -> int:
        n: int = hf["replay"](first)
        return n

    hf_sampled: Any = hf["sampled"]
    # --no-eos: every row runs max_new_tokens on both sides (HF: EOS masked), so there is nothing to replay
    hf_runs = {"sampled": hf_sampled} if args.no_eos else {"sampled": hf_sampled, "replayed": replayed}
    for f in hf_runs.values():
        f()
    hf_tokens: dict[str, list[int]] = {k: [] for k in hf_runs}  # per run: sampled runs differ
    t_plain: list[float] = []
    t_mon: list[float] = []
    t_hf: dict[str, list[float]] = {k: [] for k in hf_runs}
    cpu: dict[str, list[float]] = {k: [] for k in ("plain", "monitored", *hf_runs)}
    ref: list[Generation] = []
    mon: list[Generation] = []
    for r in range(args.repeats):
        t, c, ref = cpu_timed(plain)
        t_plain.append(t)
        cpu["plain"].append(c)
        t, c, mon = cpu_timed(monitored)
        t_mon.append(t)
        cpu["monitored"].append(c)
        for k, f in hf_runs.items():
            t, c, n = cpu_timed(f)
            hf_tokens[k].append(n)
            t_hf[k].append(t)
            cpu[k].append(c)
        hf_times = ", ".join(f"{k} {t_hf[k][-1]:.3f} s" for k in hf_runs)
        print(
            f"  repeat {r + 1}/{args.repeats}: plain {t_plain[-1]:.3f} s, monitored {t_mon[-1]:.3f} s, "
            f"HF generate {hf_times}"
        )
    t_ws = statistics.median(timed(lambda: word_starts(model.tokenizer))[0] for _ in range(3))
    rollbacks = sum(len(g.rollbacks) for g in mon)
    fired = [i for i, g in enumerate(mon) if g.rollbacks]
    same = [g.tokens == h.tokens for g, h in zip(ref, mon)]
    mismatch_no_rollback = [i for i, ok in enumerate(same) if not ok and i not in fired]
    max_score = max((max(g.scores, default=0.0) for g in mon), default=0.0)
    med_p, med_m = statistics.median(t_plain), statistics.median(t_mon)
    n_tok = token_count(ref)
    out: dict[str, Any] = {
        "plain_s": t_plain,
        "monitored_s": t_mon,
        "median_plain_s": med_p,
        "median_monitored_s": med_m,
        "ratio": med_m / med_p,
        "target_ratio": 1.10,
        "generated_tokens": n_tok,
        "tokens_per_s_plain": n_tok / med_p,
        "tokens_per_s_monitored": token_count(mon) / med_m,
        "rollbacks": rollbacks,
        "sequences_with_rollbacks": fired,
        "same_tokens": all(same),
        "max_score": max_score,
        "forward_tokens_plain": sum(g.forward_tokens for g in ref),
        "forward_tokens_monitored": sum(g.forward_tokens for g in mon),
        "word_starts_table_s": t_ws,
    }
    for k in hf_runs:
        med = statistics.median(t_hf[k])
        out[f"hf_{k}_s"], out[f"median_hf_{k}_s"], out[f"hf_{k}_tokens"] = t_hf[k], med, hf_tokens[k]
        # per run (the sampled runs generate different numbers of tokens), then the median
        hf_rates = [n / t for n, t in zip(hf_tokens[k], t_hf[k])]
        hf_cpu_rates = [n / c for n, c in zip(hf_tokens[k], cpu[k])]
        out[f"tokens_per_s_hf_{k}"] = statistics.median(hf_rates)
        for mine, runs, n in (("plain", t_plain, n_tok), ("monitored", t_mon, token_count(mon))):
            out[f"{mine}_vs_hf_{k}"] = out[f"tokens_per_s_{mine}"] / out[f"tokens_per_s_hf_{k}"]
            # best of the repeats on each side: on a shared machine, the run least slowed down by others
            out[f"best_{mine}_vs_hf_{k}"] = (n / min(runs)) / max(hf_rates)
            # CPU seconds of this process (one torch thread): time other work held the cores is left out
            mine_cpu = statistics.median(n / c for c in cpu[mine])
            out[f"cpu_{mine}_vs_hf_{k}"] = mine_cpu / statistics.median(hf_cpu_rates)
    out["cpu_s"] = cpu
    print(f"\n{'':14s}{'median s':>10s}{'tokens/s':>10s}   runs (s)")
    print(f"{'plain':14s}{med_p:10.3f}{out['tokens_per_s_plain']:10.1f}   {[round(t, 3) for t in t_plain]}")
    print(
        f"{'monitored':14s}{med_m:10.3f}{out['tokens_per_s_monitored']:10.1f}   {[round(t, 3) for t in t_mon]}"
    )
    ratio = med_m / med_p
    verdict = "OK" if ratio <= 1.10 else "ABOVE TARGET"
    print(f"ratio monitored / plain = {ratio:.3f} (target <= 1.10: {verdict})")
    print(
        f"generated tokens: {n_tok}; positions run through the model: plain {out['forward_tokens_plain']}, "
        f"monitored {out['forward_tokens_monitored']} (monitored also feeds each sequence's last token)"
    )
    print(
        f"of the monitored overhead ({med_m - med_p:+.3f} s): building the word-start table once per call "
        f"(interventions.sampling.word_starts) takes {t_ws:.3f} s on its own"
    )
    print(f"rollbacks in the monitored runs: {rollbacks} (max probe score {max_score:.3g})")
    if rollbacks:
        print(
            f"  NOTE: the probe fired on sequences {fired}: their tokens differ from the plain run by design"
        )
    print(f"same tokens as plain generation: {'yes' if all(same) else 'NO'}")
    if mismatch_no_rollback:
        raise SystemExit(
            f"sequences {mismatch_no_rollback} had no rollback but differ from plain generation: "
            "the monitor changed the output"
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--probe", default=None, help="a saved probe directory (probe.json + probe.safetensors)")
    ap.add_argument(
        "--prompts", type=int, default=8, help=f"how many built-in prompts (at most {len(PROMPTS)})"
    )
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", default=None, help="write every number as JSON here")
    ap.add_argument(
        "--no-eos",
        action="store_true",
        help="every row generates --max-new-tokens on both sides (toxlens: stop_at_eos=False; HF: EOS masked "
        "by min_new_tokens), so the tokens/s compare equal work under each side's own sampling",
    )
    args = ap.parse_args()
    if not 1 <= args.prompts <= len(PROMPTS):
        ap.error(f"--prompts must be in [1, {len(PROMPTS)}]")
    if args.repeats < 1 or args.max_new_tokens < 1:
        ap.error("--repeats and --max-new-tokens must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    model = load_model(args.model, args.device)
    load_s = time.perf_counter() - t0
    if args.probe:
        probe = Probe.load(args.probe)
        probe_desc = f"probe from {args.probe} (layer {probe.layer}, {probe.hook})"
    else:
        probe = silent_probe(model, args.seed)
        probe_desc = (
            f"no --probe: random-direction probe at the middle layer {probe.layer} ({probe.hook}) with bias "
            "-1e4, so it never fires"
        )
    prompts = list(PROMPTS[: args.prompts])
    print(
        f"model {args.model} ({model.info.n_layers} layers, d_model {model.info.d_model}, {model.info.device}, "
        f"torch threads {torch.get_num_threads()}), loaded in {load_s:.1f} s"
    )
    print(probe_desc)
    print(
        f"{len(prompts)} prompts x {args.max_new_tokens} new tokens, batch size {args.batch_size}, seed "
        f"{args.seed}, Sampling(temperature=1.0); threshold {THRESHOLD}, RollbackPolicy(safe_threshold="
        f"{SAFE_THRESHOLD}); {args.repeats} repeat(s), interleaved, after one warm-up of each\n"
    )
    print("== 1. monitored (no rollback firing) vs plain generation ==")
    over = overhead(args, model, probe, prompts, hf_generator(args, model, prompts))
    runs = (("sampled", "its own draws"), ("replayed", "toxlens's plain tokens, the same work"))
    for k, what in runs[:1] if args.no_eos else runs:
        print(
            f"Hugging Face generate, {k} ({what}): median {over[f'median_hf_{k}_s']:.3f} s, "
            f"{over[f'tokens_per_s_hf_{k}']:.1f} tokens/s (tokens per run {over[f'hf_{k}_tokens']}); toxlens relative "
            f"to it: plain {over[f'plain_vs_hf_{k}']:.2f}x (target >= 0.9), monitored "
            f"{over[f'monitored_vs_hf_{k}']:.2f}x (target >= 0.85); best of {args.repeats} runs on each side: "
            f"plain {over[f'best_plain_vs_hf_{k}']:.2f}x, monitored {over[f'best_monitored_vs_hf_{k}']:.2f}x; "
            f"from median CPU seconds: plain {over[f'cpu_plain_vs_hf_{k}']:.2f}x, monitored "
            f"{over[f'cpu_monitored_vs_hf_{k}']:.2f}x"
        )

    print(f"\n== 2. forced rollbacks on {prompts[0]!r} (one sequence, {args.max_new_tokens} new tokens) ==")
    rows = forced_rollbacks(args, model, probe, prompts[0])
    print_rollbacks(rows)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "model": args.model,
            "device": str(model.info.device),
            "torch_threads": torch.get_num_threads(),
            "probe": probe_desc,
            "prompts": prompts,
            "max_new_tokens": args.max_new_tokens,
            "batch_size": args.batch_size,
            "seed": args.seed,
            "repeats": args.repeats,
            "threshold": THRESHOLD,
            "safe_threshold": SAFE_THRESHOLD,
            "overhead": over,
            "forced_rollbacks": rows,
        }
        out.write_text(json.dumps(payload, indent=2))
        print(f"wrote {out}")
    if not all(r["ok"] for r in rows):
        raise SystemExit("a forced rollback did not cost what was expected (see MISMATCH rows)")


if __name__ == "__main__":
    main()
